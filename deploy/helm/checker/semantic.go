package main

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// workload is anything that runs pods from a template.
type workload struct {
	object
	selector *metav1.LabelSelector
	template corev1.PodTemplateSpec
	// long-running pods must say when they are ready and alive; a Job's need not
	serving bool
}

func workloadOf(o object) (workload, bool) {
	switch v := o.obj.(type) {
	case *appsv1.Deployment:
		return workload{o, v.Spec.Selector, v.Spec.Template, true}, true
	case *appsv1.StatefulSet:
		return workload{o, v.Spec.Selector, v.Spec.Template, true}, true
	case *appsv1.DaemonSet:
		return workload{o, v.Spec.Selector, v.Spec.Template, true}, true
	case *batchv1.Job:
		return workload{o, v.Spec.Selector, v.Spec.Template, false}, true
	}
	return workload{}, false
}

// semanticProblems runs the cross-object checks on objects that decoded.
func semanticProblems(objects []object) []string {
	var problems []string
	add := func(o object, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s (%s)", o.label(), fmt.Sprintf(format, args...), o.source))
	}

	seen := map[string]bool{}
	configMaps := map[string]bool{}
	services := map[string]*corev1.Service{}
	var workloads []workload
	for _, o := range objects {
		key := o.gvk.GroupKind().String() + " " + o.namespace + "/" + o.name
		if seen[key] {
			add(o, "rendered twice")
		}
		seen[key] = true
		switch v := o.obj.(type) {
		case *corev1.ConfigMap:
			configMaps[o.namespace+"/"+o.name] = true
		case *corev1.Service:
			services[o.namespace+"/"+o.name] = v
		}
		if w, ok := workloadOf(o); ok {
			workloads = append(workloads, w)
		}
	}

	// the workloads whose pod templates a selector picks (same namespace)
	matching := func(o object, sel labels.Selector) []workload {
		var found []workload
		for _, w := range workloads {
			if w.namespace == o.namespace && sel.Matches(labels.Set(w.template.Labels)) {
				found = append(found, w)
			}
		}
		return found
	}

	for _, w := range workloads {
		problems = append(problems, podProblems(w, configMaps)...)
	}

	for _, o := range objects {
		switch v := o.obj.(type) {
		case *corev1.Service:
			if len(v.Spec.Selector) == 0 {
				continue // a Service without selector has hand-made endpoints
			}
			pods := matching(o, labels.SelectorFromSet(v.Spec.Selector))
			if len(pods) == 0 {
				add(o, "selector %v matches no rendered pod template", v.Spec.Selector)
				continue
			}
			for _, port := range v.Spec.Ports {
				if port.TargetPort.Type != intstr.String {
					continue
				}
				for _, w := range pods {
					if !hasNamedPort(w.template.Spec, port.TargetPort.StrVal) {
						add(o, "port %q: targetPort %q is not a container port of %s",
							port.Name, port.TargetPort.StrVal, w.label())
					}
				}
			}
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(v.Spec.Selector)
			if err != nil || v.Spec.Selector == nil {
				add(o, "invalid selector: %v", err)
				continue
			}
			if len(matching(o, sel)) == 0 {
				add(o, "selector %s matches no rendered pod template", sel)
			}
			if v.Spec.MinAvailable != nil && v.Spec.MaxUnavailable != nil {
				add(o, "minAvailable and maxUnavailable are mutually exclusive")
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			ref := v.Spec.ScaleTargetRef
			var target *workload
			for i := range workloads {
				w := &workloads[i]
				if w.gvk.Kind == ref.Kind && w.name == ref.Name && w.namespace == o.namespace {
					target = w
				}
			}
			if target == nil {
				add(o, "scaleTargetRef %s/%s is not rendered", ref.Kind, ref.Name)
				continue
			}
			if v.Spec.MinReplicas != nil && *v.Spec.MinReplicas > v.Spec.MaxReplicas {
				add(o, "minReplicas %d > maxReplicas %d", *v.Spec.MinReplicas, v.Spec.MaxReplicas)
			}
			for _, m := range v.Spec.Metrics {
				if m.Type != autoscalingv2.ResourceMetricSourceType || m.Resource == nil ||
					m.Resource.Target.Type != autoscalingv2.UtilizationMetricType {
					continue
				}
				for _, c := range target.template.Spec.Containers {
					if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
						add(o, "utilization of %s needs a %s request on every container (%s container %q has none)",
							m.Resource.Name, m.Resource.Name, target.label(), c.Name)
					}
				}
			}
		case *appsv1.StatefulSet:
			svc, ok := services[o.namespace+"/"+v.Spec.ServiceName]
			if v.Spec.ServiceName == "" {
				continue
			}
			if !ok {
				add(o, "serviceName %q is not rendered", v.Spec.ServiceName)
			} else if svc.Spec.ClusterIP != corev1.ClusterIPNone {
				add(o, "serviceName %q is not a headless Service (clusterIP: None)", v.Spec.ServiceName)
			}
		}
	}
	return problems
}

func podProblems(w workload, configMaps map[string]bool) []string {
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s (%s)", w.label(), fmt.Sprintf(format, args...), w.source))
	}
	if w.selector == nil {
		add("spec.selector is required")
	} else if sel, err := metav1.LabelSelectorAsSelector(w.selector); err != nil {
		add("invalid selector: %v", err)
	} else if sel.Empty() || !sel.Matches(labels.Set(w.template.Labels)) {
		add("selector %s does not match the pod template's labels %v", sel, w.template.Labels)
	}

	spec := w.template.Spec
	if len(spec.Containers) == 0 {
		add("no containers")
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
		if v.ConfigMap != nil && !isTrue(v.ConfigMap.Optional) && !configMaps[w.namespace+"/"+v.ConfigMap.Name] {
			add("volume %q: ConfigMap %q is not rendered", v.Name, v.ConfigMap.Name)
		}
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range all {
		where := fmt.Sprintf("container %q", c.Name)
		if c.Image == "" {
			add("%s: no image", where)
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				add("%s: volumeMount %q names no volume", where, m.Name)
			}
		}
		names := map[string]bool{}
		for _, e := range c.Env {
			if names[e.Name] {
				add("%s: env %s is set twice (the last one wins)", where, e.Name)
			}
			names[e.Name] = true
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				ref := e.ValueFrom.ConfigMapKeyRef
				if !isTrue(ref.Optional) && !configMaps[w.namespace+"/"+ref.Name] {
					add("%s: env %s: ConfigMap %q is not rendered", where, e.Name, ref.Name)
				}
			}
		}
		for _, from := range c.EnvFrom {
			if ref := from.ConfigMapRef; ref != nil && !isTrue(ref.Optional) && !configMaps[w.namespace+"/"+ref.Name] {
				add("%s: envFrom ConfigMap %q is not rendered", where, ref.Name)
			}
		}
	}
	if !w.serving {
		return problems
	}
	for _, c := range spec.Containers {
		where := fmt.Sprintf("container %q", c.Name)
		if len(c.Resources.Requests) == 0 {
			add("%s: no resource requests", where)
		}
		for _, named := range []struct {
			name  string
			probe *corev1.Probe
		}{{"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}} {
			name, probe := named.name, named.probe
			if probe == nil {
				add("%s: no %s", where, name)
				continue
			}
			var port intstr.IntOrString
			switch {
			case probe.HTTPGet != nil:
				port = probe.HTTPGet.Port
			case probe.TCPSocket != nil:
				port = probe.TCPSocket.Port
			default:
				continue
			}
			if port.Type == intstr.String && !hasNamedPort(corev1.PodSpec{Containers: []corev1.Container{c}}, port.StrVal) {
				add("%s: %s port %q is not one of its container ports", where, name, port.StrVal)
			}
		}
	}
	return problems
}

func hasNamedPort(spec corev1.PodSpec, name string) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

func isTrue(b *bool) bool { return b != nil && *b }
