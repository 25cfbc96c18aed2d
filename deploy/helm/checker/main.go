// Command checker strictly validates a stream of Kubernetes manifests (`helm template` output)
// against the Kubernetes API types, without a cluster.
//
//	helm template freshrec deploy/helm/freshrec | checker          # stdin
//	checker rendered.yaml [more.yaml ...]                           # files
//
// Each YAML document is decoded into the typed object its apiVersion+kind name (k8s.io/api):
// an unknown kind, an unknown field, a duplicate field or a value of the wrong type is an
// error, as the API server's strict field validation would report it. A few cheap semantic
// checks follow (selectors match their pod templates, containers have probes, Services,
// PodDisruptionBudgets and HPAs point at something the stream renders).
//
// Exit status 0 with a one-line summary on stdout when everything is valid; otherwise 1 with
// one `<kind>/<name>: <error>` line per problem on stderr (2 for an unreadable input).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, "usage: checker [FILE ...]  (no FILE or '-': read stdin)")
		return 0
	}
	var inputs []namedReader
	if len(args) == 0 {
		args = []string{"-"}
	}
	for _, arg := range args {
		if arg == "-" {
			inputs = append(inputs, namedReader{"<stdin>", stdin})
			continue
		}
		f, err := os.Open(arg)
		if err != nil {
			fmt.Fprintf(stderr, "checker: %v\n", err)
			return 2
		}
		defer f.Close()
		inputs = append(inputs, namedReader{arg, f})
	}

	var objects []object
	var problems []string
	for _, in := range inputs {
		objs, probs, err := decodeStream(in.name, bufio.NewReader(in.r))
		if err != nil {
			fmt.Fprintf(stderr, "checker: %s: %v\n", in.name, err)
			return 2
		}
		objects = append(objects, objs...)
		problems = append(problems, probs...)
	}
	problems = append(problems, semanticProblems(objects)...)

	if len(objects) == 0 && len(problems) == 0 {
		problems = append(problems, "input: no Kubernetes object found")
	}
	if len(problems) > 0 {
		for _, p := range problems {
			// one line per problem: YAML errors come with their own line breaks
			fmt.Fprintln(stderr, strings.Join(strings.Fields(p), " "))
		}
		fmt.Fprintf(stderr, "checker: %d problem(s) in %d object(s)\n", len(problems), len(objects))
		return 1
	}
	fmt.Fprintf(stdout, "ok: %d objects valid (%s)\n", len(objects), kindCounts(objects))
	return 0
}

type namedReader struct {
	name string
	r    io.Reader
}
