package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// object is one decoded manifest.
type object struct {
	gvk       schema.GroupVersionKind
	name      string
	namespace string
	source    string // helm's `# Source:` template, when the document names one
	obj       runtime.Object
}

func (o object) label() string { return label(o.gvk.Kind, o.name) }

func label(kind, name string) string {
	if kind == "" {
		kind = "<no kind>"
	}
	if name == "" {
		name = "<no name>"
	}
	return kind + "/" + name
}

// The API groups a chart may use. Only current, served versions are registered: a manifest
// written against a removed version (policy/v1beta1, autoscaling/v2beta2, ...) is refused
// like a kind the checker does not know.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme,
		appsv1.AddToScheme,
		batchv1.AddToScheme,
		policyv1.AddToScheme,
		autoscalingv2.AddToScheme,
		rbacv1.AddToScheme,
		networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// newTyped returns an empty typed object for gvk, or an error when gvk is not a persisted
// API object the checker knows (lists and option types are registered too: refuse those).
func newTyped(gvk schema.GroupVersionKind) (runtime.Object, error) {
	obj, err := scheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("unknown kind %q in apiVersion %q", gvk.Kind, gvk.GroupVersion())
	}
	if _, err := meta.Accessor(obj); err != nil || strings.HasSuffix(gvk.Kind, "List") {
		return nil, fmt.Errorf("unknown kind %q in apiVersion %q", gvk.Kind, gvk.GroupVersion())
	}
	return obj, nil
}

// header is read leniently first, so that every later error can name its object.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func sourceOf(doc []byte) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source:"); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

// decodeStream decodes every document of a multi-document YAML stream strictly. It returns
// the objects that decoded, one problem line per defect, and an error only when the stream
// itself cannot be read.
func decodeStream(name string, r *bufio.Reader) ([]object, []string, error) {
	reader := yamlutil.NewYAMLReader(r)
	var objects []object
	var problems []string
	for index := 1; ; index++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects, problems, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		where := fmt.Sprintf("%s document %d", name, index)
		if src := sourceOf(doc); src != "" {
			where = src
		}
		obj, probs := decodeDocument(doc, where)
		problems = append(problems, probs...)
		if obj != nil {
			objects = append(objects, *obj)
		}
	}
}

// decodeDocument decodes one document. Strict errors (unknown or duplicate fields) are
// reported, and the object, decoded as the API server would have decoded it leniently, is
// still returned for the cross-object checks, so that one misspelt field does not also make
// its Service "select nothing". Only a document that cannot be decoded at all returns nil.
func decodeDocument(doc []byte, where string) (*object, []string) {
	var problems []string
	var head header
	_ = yaml.Unmarshal(doc, &head) // lenient first, so that every error names its object
	id := label(head.Kind, head.Metadata.Name)
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s (%s)", id, fmt.Sprintf(format, args...), where))
	}

	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		report("invalid YAML: %v", err)
		if data, err = yaml.YAMLToJSON(doc); err != nil {
			return nil, problems
		}
	}
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return nil, problems // a document of comments only (an empty template)
	}
	if err := json.Unmarshal(data, &head); err != nil {
		report("not a Kubernetes object: %v", err)
		return nil, problems
	}
	id = label(head.Kind, head.Metadata.Name)
	if head.APIVersion == "" || head.Kind == "" {
		report("apiVersion and kind are required")
		return nil, problems
	}
	gv, err := schema.ParseGroupVersion(head.APIVersion)
	if err != nil {
		report("%v", err)
		return nil, problems
	}
	gvk := gv.WithKind(head.Kind)
	typed, err := newTyped(gvk)
	if err != nil {
		report("%v", err)
		return nil, problems
	}
	// case-sensitive, like the API server: `Limits:` is as unknown as `limitz:`
	strict, err := sigsjson.UnmarshalStrict(
		data, typed, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields,
	)
	for _, e := range strict {
		report("%v", e)
	}
	if err != nil {
		report("%v", err)
		return nil, problems
	}
	if head.Metadata.Name == "" {
		report("metadata.name is required")
	}
	return &object{
		gvk:       gvk,
		name:      head.Metadata.Name,
		namespace: head.Metadata.Namespace,
		source:    where,
		obj:       typed,
	}, problems
}

func kindCounts(objects []object) string {
	counts := map[string]int{}
	for _, o := range objects {
		counts[o.gvk.Kind]++
	}
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}
