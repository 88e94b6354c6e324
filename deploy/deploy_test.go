// Package deploy_test checks the deployment files under deploy/ against the
// official Kubernetes and prometheus-operator API types, the relay's
// configuration (CONTRACT.md section 7), its metric families (CONTRACT.md
// section 8) and each other. It needs no cluster, Docker or promtool;
// promtool's own checks run from .ci. It is a Go module of its own
// (deploy/go.mod, joined to the relay's by go.work), so that the relay's
// go.mod, and the image's build, do without the API types' modules.
package deploy_test

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/pulsedive-relay/relay/metrics"
)

// The relay's environment variables: CONTRACT.md section 7 plus METRICS_ADDR,
// RELAY_MAX_INFLIGHT, RELAY_MAX_INFLIGHT_PER_KEY and RELAY_LINKS_MAX_WAIT.
var (
	durationVars = []string{
		"PULSEDIVE_TIMEOUT", "RELAY_REQUEST_TIMEOUT", "CACHE_TTL", "CACHE_NEGATIVE_TTL",
		"CACHE_STALE_TTL", "RELAY_DRAIN_DELAY", "RELAY_SHUTDOWN_TIMEOUT", "REDIS_TIMEOUT", "RELAY_LINKS_MAX_WAIT",
	}
	intVars = []string{
		"PULSEDIVE_RATE_LIMIT", "PULSEDIVE_BURST", "RELAY_WORKERS", "RELAY_MAX_OBSERVABLES",
		"RELAY_MAX_BODY_BYTES", "CACHE_MAX_BYTES", "CTR_ENTITIES_LIMIT", "RELAY_MAX_INFLIGHT",
		"RELAY_MAX_INFLIGHT_PER_KEY",
		"RELAY_REPLICAS",
	}
	otherVars = []string{
		"RELAY_ADDR", "METRICS_ADDR", "PULSEDIVE_API_URL", "RELAY_JWKS_HOSTS", "RELAY_AUDIENCE",
		"LOG_LEVEL", "LOG_FORMAT", "REDIS_URL",
	}
)

const (
	k8sDir      = "kubernetes"
	minGrace    = 55 * time.Second // RELAY_DRAIN_DELAY 5s + RELAY_SHUTDOWN_TIMEOUT 45s + margin
	graceMargin = 5 * time.Second
	// drainSlack is what RELAY_SHUTDOWN_TIMEOUT must add to
	// RELAY_REQUEST_TIMEOUT for a request taken as the listener closes:
	// 5s for its headers and 15s to write its answer (cmd/relay/budget.go).
	drainSlack   = 20 * time.Second
	relayPort    = 9090
	composeFile  = "docker-compose.yml"
	rulesFile    = "prometheus/rules.yml"
	promFile     = "prometheus/prometheus.yml"
	dashFile     = "grafana/dashboard.json"
	providerFile = "grafana/provisioning/dashboards/pulsedive-relay.yaml"
	dsFile       = "grafana/provisioning/datasources/prometheus.yaml"
)

// decodeStrict decodes a YAML manifest into v, failing on unknown or
// duplicate fields, and checks its apiVersion and kind.
func decodeStrict(t *testing.T, file, apiVersion, kind string, v any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		t.Fatalf("%s: strict decode into %T: %v", file, v, err)
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if got, want := tm.APIVersion+" "+tm.Kind, apiVersion+" "+kind; got != want {
		t.Fatalf("%s: apiVersion and kind = %q, want %q", file, got, want)
	}
}

// manifests holds every Kubernetes object under deploy/kubernetes.
type manifests struct {
	deploy    appsv1.Deployment
	service   corev1.Service
	hpa       autoscalingv2.HorizontalPodAutoscaler
	pdb       policyv1.PodDisruptionBudget
	configMap corev1.ConfigMap
	// The Redis the replicas share.
	redis        appsv1.Deployment
	redisService corev1.Service
	// TLS at the edge, and the prometheus-operator objects.
	ingress        networkingv1.Ingress
	serviceMonitor monitoringv1.ServiceMonitor
	prometheusRule monitoringv1.PrometheusRule
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	var m manifests
	decodeStrict(t, filepath.Join(k8sDir, "deployment.yaml"), "apps/v1", "Deployment", &m.deploy)
	decodeStrict(t, filepath.Join(k8sDir, "service.yaml"), "v1", "Service", &m.service)
	decodeStrict(t, filepath.Join(k8sDir, "hpa.yaml"), "autoscaling/v2", "HorizontalPodAutoscaler", &m.hpa)
	decodeStrict(t, filepath.Join(k8sDir, "pdb.yaml"), "policy/v1", "PodDisruptionBudget", &m.pdb)
	decodeStrict(t, filepath.Join(k8sDir, "configmap.yaml"), "v1", "ConfigMap", &m.configMap)
	decodeStrict(t, filepath.Join(k8sDir, "redis-deployment.yaml"), "apps/v1", "Deployment", &m.redis)
	decodeStrict(t, filepath.Join(k8sDir, "redis-service.yaml"), "v1", "Service", &m.redisService)
	decodeStrict(t, filepath.Join(k8sDir, "ingress.yaml"), "networking.k8s.io/v1", "Ingress", &m.ingress)
	decodeStrict(t, filepath.Join(k8sDir, "servicemonitor.yaml"), "monitoring.coreos.com/v1", "ServiceMonitor", &m.serviceMonitor)
	decodeStrict(t, filepath.Join(k8sDir, "prometheusrule.yaml"), "monitoring.coreos.com/v1", "PrometheusRule", &m.prometheusRule)
	return &m
}

// relayContainer returns the Deployment's only container.
func relayContainer(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("deployment has %d containers, want 1", len(cs))
	}
	return cs[0]
}

func TestEveryManifestIsChecked(t *testing.T) {
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{
		"configmap.yaml", "deployment.yaml", "hpa.yaml", "ingress.yaml", "pdb.yaml", "prometheusrule.yaml",
		"redis-deployment.yaml", "redis-service.yaml", "service.yaml", "servicemonitor.yaml",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files in %s (-want +got); a new manifest needs a strict decode in loadManifests:\n%s", k8sDir, diff)
	}
}

func TestDecodeStrictRejectsUnknownFields(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		into any
	}{
		{"PodDisruptionBudget", "apiVersion: policy/v1\nkind: PodDisruptionBudget\nspec:\n  minAvailabel: 1\n", &policyv1.PodDisruptionBudget{}},
		{"ServiceMonitor", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nspec:\n  endpoints:\n    - port: http\n      intervall: 15s\n", &monitoringv1.ServiceMonitor{}},
		{"PrometheusRule", "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nspec:\n  groups:\n    - name: g\n      rules:\n        - alert: A\n          expr: up\n          runbook_url: x\n", &monitoringv1.PrometheusRule{}},
		{"Ingress", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nspec:\n  tls:\n    - hosts: [a]\n      secret: b\n", &networkingv1.Ingress{}},
		{"a duplicate field", "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n", &corev1.Service{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := yaml.UnmarshalStrict([]byte(tt.doc), tt.into); err == nil {
				t.Error("a misspelt or repeated field decoded without error; strict decoding is not strict")
			}
		})
	}
}

func TestDeployment(t *testing.T) {
	m := loadManifests(t)
	d := &m.deploy
	c := relayContainer(t, d)
	pod := d.Spec.Template.Spec

	t.Run("image and port", func(t *testing.T) {
		if got, want := c.Image, "ghcr.io/pulsedive-relay/relay:latest"; got != want {
			t.Errorf("image = %q, want %q", got, want)
		}
		want := []corev1.ContainerPort{{Name: "http", ContainerPort: relayPort, Protocol: corev1.ProtocolTCP}}
		if diff := cmp.Diff(want, c.Ports); diff != "" {
			t.Errorf("ports (-want +got):\n%s", diff)
		}
	})

	t.Run("probes", func(t *testing.T) {
		tests := []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{
			{"liveness", c.LivenessProbe, "/healthz"},
			{"readiness", c.ReadinessProbe, "/readyz"},
			{"startup", c.StartupProbe, "/healthz"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.probe == nil || tt.probe.HTTPGet == nil {
					t.Fatalf("%s probe is not an httpGet probe", tt.name)
				}
				g := tt.probe.HTTPGet
				if g.Path != tt.path {
					t.Errorf("path = %q, want %q", g.Path, tt.path)
				}
				if g.Port.String() != "http" && g.Port.IntValue() != relayPort {
					t.Errorf("port = %v, want http or %d", g.Port.String(), relayPort)
				}
				if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
					t.Errorf("scheme = %q, want HTTP", g.Scheme)
				}
			})
		}
		// While draining, /readyz must turn the pod unready before the drain
		// delay ends.
		drain := configDuration(t, m, "RELAY_DRAIN_DELAY")
		r := c.ReadinessProbe
		if got := time.Duration(r.PeriodSeconds*max(r.FailureThreshold, 1)) * time.Second; got > drain {
			t.Errorf("readiness takes up to %v to fail, longer than RELAY_DRAIN_DELAY %v", got, drain)
		}
	})

	t.Run("security context", func(t *testing.T) {
		psc, sc := pod.SecurityContext, c.SecurityContext
		if psc == nil || sc == nil {
			t.Fatal("pod or container securityContext missing")
		}
		type view struct {
			RunAsNonRoot, ReadOnlyRootFS, AllowPrivilegeEscalation *bool
			RunAsUser                                              *int64
			Seccomp                                                *corev1.SeccompProfile
			Drop                                                   []corev1.Capability
			Add                                                    []corev1.Capability
		}
		got := view{
			RunAsNonRoot:             sc.RunAsNonRoot,
			ReadOnlyRootFS:           sc.ReadOnlyRootFilesystem,
			AllowPrivilegeEscalation: sc.AllowPrivilegeEscalation,
			RunAsUser:                sc.RunAsUser,
			Seccomp:                  sc.SeccompProfile,
		}
		if sc.Capabilities != nil {
			got.Drop, got.Add = sc.Capabilities.Drop, sc.Capabilities.Add
		}
		yes, no, uid := true, false, int64(65532)
		want := view{
			RunAsNonRoot:             &yes,
			ReadOnlyRootFS:           &yes,
			AllowPrivilegeEscalation: &no,
			RunAsUser:                &uid,
			Seccomp:                  &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			Drop:                     []corev1.Capability{"ALL"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("container securityContext (-want +got):\n%s", diff)
		}
		podWant := corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, SeccompProfile: want.Seccomp}
		podGot := corev1.PodSecurityContext{RunAsNonRoot: psc.RunAsNonRoot, RunAsUser: psc.RunAsUser, SeccompProfile: psc.SeccompProfile}
		if diff := cmp.Diff(podWant, podGot); diff != "" {
			t.Errorf("pod securityContext (-want +got):\n%s", diff)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Error("container is privileged")
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Error("automountServiceAccountToken is not false; the relay uses no Kubernetes API")
		}
	})

	t.Run("resources", func(t *testing.T) {
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[name]; !ok {
				t.Errorf("no %s request", name)
			}
			if _, ok := c.Resources.Limits[name]; !ok {
				t.Errorf("no %s limit", name)
			}
		}
		limit := c.Resources.Limits[corev1.ResourceMemory]
		if limit.Cmp(resource.MustParse("256Mi")) < 0 {
			t.Errorf("memory limit %v below 256Mi", limit.String())
		}
		if req := c.Resources.Requests[corev1.ResourceMemory]; req.Cmp(limit) > 0 {
			t.Errorf("memory request %v above limit %v", req.String(), limit.String())
		}
		// The cache budget must leave room for the heap around it.
		cache := configInt(t, m, "CACHE_MAX_BYTES")
		if 2*cache > limit.Value() {
			t.Errorf("CACHE_MAX_BYTES %d is more than half the memory limit %v", cache, limit.String())
		}
		for _, e := range c.Env {
			if e.Name != "GOMEMLIMIT" {
				continue
			}
			soft, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
			if err != nil {
				t.Fatalf("GOMEMLIMIT %q: %v", e.Value, err)
			}
			if soft.Cmp(limit) >= 0 {
				t.Errorf("GOMEMLIMIT %s not below the memory limit %v", e.Value, limit.String())
			}
		}
	})

	t.Run("shutdown timeout covers a request taken as the drain ends", func(t *testing.T) {
		shutdown, request := configDuration(t, m, "RELAY_SHUTDOWN_TIMEOUT"), configDuration(t, m, "RELAY_REQUEST_TIMEOUT")
		if shutdown < request+drainSlack {
			t.Errorf("RELAY_SHUTDOWN_TIMEOUT = %v, want at least RELAY_REQUEST_TIMEOUT %v + %v", shutdown, request, drainSlack)
		}
	})

	t.Run("termination grace covers drain and shutdown", func(t *testing.T) {
		if pod.TerminationGracePeriodSeconds == nil {
			t.Fatal("terminationGracePeriodSeconds unset (Kubernetes default 30s is too short)")
		}
		grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		need := configDuration(t, m, "RELAY_DRAIN_DELAY") + configDuration(t, m, "RELAY_SHUTDOWN_TIMEOUT") + graceMargin
		if grace < max(minGrace, need) {
			t.Errorf("terminationGracePeriodSeconds = %v, want at least %v", grace, max(minGrace, need))
		}
	})

	t.Run("environment from the ConfigMap, no secrets", func(t *testing.T) {
		var refs []string
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil {
				t.Errorf("envFrom a Secret %q: the relay needs none", ef.SecretRef.Name)
			}
			if ef.ConfigMapRef != nil {
				refs = append(refs, ef.ConfigMapRef.Name)
			}
		}
		if diff := cmp.Diff([]string{m.configMap.Name}, refs); diff != "" {
			t.Errorf("envFrom ConfigMaps (-want +got):\n%s", diff)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("env %s from a Secret: the relay needs none", e.Name)
			}
		}
	})

	t.Run("scrape annotations", func(t *testing.T) {
		want := map[string]string{
			"prometheus.io/scrape": "true",
			"prometheus.io/port":   strconv.Itoa(relayPort),
			"prometheus.io/path":   "/metrics",
		}
		got := map[string]string{}
		for k, v := range d.Spec.Template.Annotations {
			if strings.HasPrefix(k, "prometheus.io/") {
				got[k] = v
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("pod annotations (-want +got):\n%s", diff)
		}
		if addr := m.configMap.Data["METRICS_ADDR"]; addr != "" {
			t.Errorf("METRICS_ADDR = %q but the annotations scrape port %d", addr, relayPort)
		}
	})

	t.Run("selector matches the pod template", func(t *testing.T) {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("selector %v does not match template labels %v", sel, d.Spec.Template.Labels)
		}
	})
}

func TestConfigMap(t *testing.T) {
	m := loadManifests(t)
	known := slices.Concat(durationVars, intVars, otherVars)
	var unknown []string
	for k := range m.configMap.Data {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		t.Errorf("ConfigMap keys not in the relay's configuration: %v", unknown)
	}
	if len(m.configMap.BinaryData) > 0 {
		t.Error("ConfigMap has binaryData")
	}

	for _, k := range durationVars {
		t.Run(k, func(t *testing.T) {
			if d := configDuration(t, m, k); d <= 0 {
				t.Errorf("%s = %v, want positive", k, d)
			}
		})
	}
	for _, k := range intVars {
		t.Run(k, func(t *testing.T) {
			if n := configInt(t, m, k); n <= 0 {
				t.Errorf("%s = %d, want positive", k, n)
			}
		})
	}
	t.Run("RELAY_ADDR", func(t *testing.T) {
		_, port, err := net.SplitHostPort(m.configMap.Data["RELAY_ADDR"])
		if err != nil || port != strconv.Itoa(relayPort) {
			t.Errorf("RELAY_ADDR = %q, want port %d (the container port)", m.configMap.Data["RELAY_ADDR"], relayPort)
		}
	})
	t.Run("PULSEDIVE_API_URL", func(t *testing.T) {
		u, err := url.Parse(m.configMap.Data["PULSEDIVE_API_URL"])
		if err != nil || u.Scheme != "https" || u.Host == "" {
			t.Errorf("PULSEDIVE_API_URL = %q, want an https URL", m.configMap.Data["PULSEDIVE_API_URL"])
		}
	})
	t.Run("RELAY_JWKS_HOSTS", func(t *testing.T) {
		for _, h := range strings.Split(m.configMap.Data["RELAY_JWKS_HOSTS"], ",") {
			if h == "" || strings.ContainsAny(h, "/ ") {
				t.Errorf("RELAY_JWKS_HOSTS entry %q is not a host[:port]", h)
			}
		}
	})
	t.Run("LOG_LEVEL and LOG_FORMAT", func(t *testing.T) {
		if l := m.configMap.Data["LOG_LEVEL"]; !slices.Contains([]string{"debug", "info", "warn", "error"}, l) {
			t.Errorf("LOG_LEVEL = %q", l)
		}
		if f := m.configMap.Data["LOG_FORMAT"]; !slices.Contains([]string{"json", "text"}, f) {
			t.Errorf("LOG_FORMAT = %q", f)
		}
	})
}

// configValue returns key from the ConfigMap; an absent key fails the test
// (every number and duration is written out so operators see the defaults).
func configValue(t *testing.T, m *manifests, key string) string {
	t.Helper()
	v, ok := m.configMap.Data[key]
	if !ok {
		t.Fatalf("ConfigMap lacks %s", key)
	}
	return v
}

func configDuration(t *testing.T, m *manifests, key string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(configValue(t, m, key))
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return d
}

func configInt(t *testing.T, m *manifests, key string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(configValue(t, m, key), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return n
}

func TestServicePDBAndHPATargetTheDeployment(t *testing.T) {
	m := loadManifests(t)
	podLabels := labels.Set(m.deploy.Spec.Template.Labels)
	c := relayContainer(t, &m.deploy)

	t.Run("service", func(t *testing.T) {
		s := m.service.Spec
		if len(s.Selector) == 0 || !labels.SelectorFromSet(s.Selector).Matches(podLabels) {
			t.Errorf("service selector %v does not select pod labels %v", s.Selector, podLabels)
		}
		if len(s.Ports) != 1 {
			t.Fatalf("service has %d ports, want 1", len(s.Ports))
		}
		p := s.Ports[0]
		if tp := p.TargetPort.String(); tp != c.Ports[0].Name && tp != strconv.Itoa(int(c.Ports[0].ContainerPort)) {
			t.Errorf("service targetPort %s is not the container port %s/%d", tp, c.Ports[0].Name, c.Ports[0].ContainerPort)
		}
		if p.Port != relayPort {
			t.Errorf("service port = %d, want %d (prometheus.yml scrapes relay:%d)", p.Port, relayPort, relayPort)
		}
	})

	t.Run("pdb", func(t *testing.T) {
		sel, err := metav1.LabelSelectorAsSelector(m.pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if sel.Empty() || !sel.Matches(podLabels) {
			t.Errorf("PDB selector %v does not select pod labels %v", sel, podLabels)
		}
		if m.pdb.Spec.MinAvailable == nil && m.pdb.Spec.MaxUnavailable == nil {
			t.Error("PDB sets neither minAvailable nor maxUnavailable")
		}
		// A PDB that allows no eviction at minReplicas blocks node drains.
		if ma := m.pdb.Spec.MinAvailable; ma != nil && m.hpa.Spec.MinReplicas != nil && ma.IntValue() >= int(*m.hpa.Spec.MinReplicas) {
			t.Errorf("PDB minAvailable %v >= HPA minReplicas %d: no pod could ever be evicted", ma.String(), *m.hpa.Spec.MinReplicas)
		}
	})

	t.Run("hpa", func(t *testing.T) {
		want := autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: m.deploy.Name}
		if diff := cmp.Diff(want, m.hpa.Spec.ScaleTargetRef); diff != "" {
			t.Errorf("scaleTargetRef (-want +got):\n%s", diff)
		}
		var cpu bool
		for _, ms := range m.hpa.Spec.Metrics {
			if ms.Type == autoscalingv2.ResourceMetricSourceType && ms.Resource != nil && ms.Resource.Name == corev1.ResourceCPU {
				cpu = true
			}
		}
		if !cpu {
			t.Error("HPA does not scale on CPU")
		}
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Error("CPU utilisation target without a CPU request")
		}
		if mr := m.hpa.Spec.MinReplicas; mr == nil || *mr > m.hpa.Spec.MaxReplicas {
			t.Errorf("minReplicas %v not within maxReplicas %d", mr, m.hpa.Spec.MaxReplicas)
		}
	})
}

// TestSharedState: the replicas share a budget through the Redis the
// manifests run. RELAY_REPLICAS equals the HPA's maximum, so that with
// Redis away the replicas together stay within PULSEDIVE_RATE_LIMIT;
// REDIS_URL names the Redis Service, which selects the Redis pods and no
// relay pod, while the relay's Service and PDB select no Redis pod.
func TestSharedState(t *testing.T) {
	m := loadManifests(t)
	if got, want := configInt(t, m, "RELAY_REPLICAS"), int64(m.hpa.Spec.MaxReplicas); got != want {
		t.Errorf("RELAY_REPLICAS = %d, HPA maxReplicas = %d: they must agree", got, want)
	}
	u, err := url.Parse(configValue(t, m, "REDIS_URL"))
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		t.Fatalf("REDIS_URL = %q, want a redis:// URL", configValue(t, m, "REDIS_URL"))
	}
	if u.User != nil {
		t.Error("REDIS_URL in a ConfigMap carries a password: put it in a Secret")
	}
	svc := m.redisService
	if u.Hostname() != svc.Name {
		t.Errorf("REDIS_URL host %q is not the Redis Service %q", u.Hostname(), svc.Name)
	}
	if len(svc.Spec.Ports) != 1 || strconv.Itoa(int(svc.Spec.Ports[0].Port)) != u.Port() {
		t.Errorf("REDIS_URL port %q is not the Redis Service's port %v", u.Port(), svc.Spec.Ports)
	}
	redisPods := labels.Set(m.redis.Spec.Template.Labels)
	relayPods := labels.Set(m.deploy.Spec.Template.Labels)
	if sel := labels.SelectorFromSet(svc.Spec.Selector); !sel.Matches(redisPods) || sel.Matches(relayPods) {
		t.Errorf("Redis Service selector %v: must select the Redis pods %v and not the relay's %v", svc.Spec.Selector, redisPods, relayPods)
	}
	if labels.SelectorFromSet(m.service.Spec.Selector).Matches(redisPods) {
		t.Error("the relay Service selects the Redis pods")
	}
	if sel, err := metav1.LabelSelectorAsSelector(m.pdb.Spec.Selector); err != nil || sel.Matches(redisPods) {
		t.Error("the relay PDB selects the Redis pods")
	}
	if sel, err := metav1.LabelSelectorAsSelector(m.redis.Spec.Selector); err != nil || !sel.Matches(redisPods) {
		t.Error("the Redis Deployment's selector does not select its own pods")
	}
	cs := m.redis.Spec.Template.Spec.Containers
	if len(cs) != 1 || len(cs[0].Ports) != 1 || cs[0].Ports[0].Name != svc.Spec.Ports[0].TargetPort.String() {
		t.Errorf("the Redis Service's targetPort does not name the Redis container's port")
	}
}

// families returns the relay's metric families by name with their type, as
// metrics.New registers them (Go and process collectors included).
func families(t *testing.T) map[string]string {
	t.Helper()
	reg := prometheus.NewRegistry()
	// One value a label is enough for every family to have a series (the
	// relay passes each package's whole list; only names and types count
	// here).
	one := []string{"x"}
	m, err := metrics.New(reg, metrics.Config{Version: "test", Labels: metrics.Labels{
		Routes: []string{"/version"}, ErrorCodes: map[string][]string{"/version": one},
		Kinds: one, CachedKinds: one, Outcomes: one, BreakerStates: one, CacheResults: one,
		ObservableTypes: one, Bounds: one, JWKSOutcomes: one, AuthFailures: one,
		RedisCommands: one, L2Results: one, CollapseResults: one,
	}})
	if err != nil {
		t.Fatal(err)
	}
	// As cmd/relay registers it when the relay has a cache.
	reg.MustRegister(metrics.NewCacheCollector(func() metrics.CacheFigures { return metrics.CacheFigures{} }))
	// Families without pre-initialised series appear once used.
	m.HTTPRequest("/version", 200, time.Millisecond)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf.GetType().String()
	}
	return out
}

// knownSeries reports whether name is a series of one of fams: a family
// name, or a histogram family's _bucket, _sum or _count.
func knownSeries(fams map[string]string, name string) bool {
	if _, ok := fams[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] == "HISTOGRAM" {
			return true
		}
	}
	return false
}

var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	reMatchers = regexp.MustCompile(`\{[^}]*\}`)
	reRange    = regexp.MustCompile(`\[[^\]]*\]`)
	reGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	reNumber   = regexp.MustCompile(`\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]?\b`)
	reIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)

	// reLabelValues picks the metric of a Grafana label_values() query.
	reLabelValues = regexp.MustCompile(`^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges, grouping clauses
// and numbers are removed, that are not function calls or keywords. It is a
// lexer's approximation, good for the expressions in this directory.
func metricNames(expr string) []string {
	expr = reString.ReplaceAllString(expr, " ")
	expr = reMatchers.ReplaceAllString(expr, " ")
	expr = reRange.ReplaceAllString(expr, " ")
	expr = reGrouping.ReplaceAllString(expr, " ")
	expr = reNumber.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range reIdent.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if strings.HasPrefix(strings.TrimSpace(expr[loc[1]:]), "(") {
			continue // a function or an aggregation
		}
		switch strings.ToLower(name) {
		case "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
			"group_left", "group_right", "inf", "nan", "atan2":
			continue
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`up{job="x"} == 0`, []string{"up"}},
		{`sum by (job) (rate(a_total{outcome=~"x|y"}[5m])) / sum(rate(a_total[5m])) > 0.1`, []string{"a_total"}},
		{`histogram_quantile(0.99, sum by (le, route) (rate(h_bucket{instance=~"$instance"}[$__rate_interval])))`, []string{"h_bucket"}},
		{`a > 0 or b and on(job) c unless ignoring (x) group_left(y) d`, []string{"a", "b", "c", "d"}},
		{`max by (instance) (g) == 2`, []string{"g"}},
		{`sum without (le) (x offset 5m)`, []string{"x"}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, metricNames(tt.expr)); diff != "" {
				t.Errorf("metricNames (-want +got):\n%s", diff)
			}
		})
	}
}

// ruleFile is the shape of a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []struct {
			Alert       string            `json:"alert,omitempty"`
			Record      string            `json:"record,omitempty"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

func TestPrometheusRules(t *testing.T) {
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	fams := families(t)
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			alerts = append(alerts, r.Alert)
			t.Run(name, func(t *testing.T) {
				names := metricNames(r.Expr)
				if len(names) == 0 {
					t.Errorf("expression selects no metric: %s", r.Expr)
				}
				for _, n := range names {
					if n != "up" && !knownSeries(fams, n) {
						t.Errorf("expression uses %q, not a relay metric family", n)
					}
				}
				if r.Alert == "" {
					return
				}
				if !slices.Contains([]string{"info", "warning", "critical"}, r.Labels["severity"]) {
					t.Errorf("severity label = %q", r.Labels["severity"])
				}
				for _, a := range []string{"summary", "description", "runbook_url"} {
					if r.Annotations[a] == "" {
						t.Errorf("annotation %s missing", a)
					}
				}
				if r.For != "" {
					if _, err := time.ParseDuration(r.For); err != nil {
						t.Errorf("for: %v", err)
					}
				}
			})
		}
	}
	for _, want := range []string{
		"PulsediveRelayHighErrorRate", "PulsediveRelayPulsedive429", "PulsediveRelayHighLatency",
		"PulsediveRelayLimiterSaturated", "PulsediveRelayCacheHitRatioCollapse", "PulsediveRelayDown",
		"PulsediveRelayAuthRefusals", "PulsediveRelayJWKSFetchFailing", "PulsediveRelayJWKSUnavailable",
		"PulsediveRelayRedisFallback", "PulsediveRelayAdmissionRefusals",
	} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s missing", want)
		}
	}
}

// promConfig is the part of prometheus.yml the tests look at.
type promConfig struct {
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		MetricsPath   string `json:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

// compose is the part of docker-compose.yml the tests look at.
type compose struct {
	Services map[string]struct {
		Build *struct {
			Context    string `json:"context"`
			Dockerfile string `json:"dockerfile"`
		} `json:"build"`
		Image       string            `json:"image"`
		Command     []string          `json:"command"`
		Environment map[string]string `json:"environment"`
		Volumes     []string          `json:"volumes"`
		Networks    []string          `json:"networks"`
		DependsOn   []string          `json:"depends_on"`
	} `json:"services"`
	Networks map[string]any `json:"networks"`
	Volumes  map[string]any `json:"volumes"`
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return c
}

// mount is one short-syntax compose volume, "source:target[:mode]".
type mount struct{ source, target string }

func mounts(t *testing.T, vols []string) []mount {
	t.Helper()
	var out []mount
	for _, v := range vols {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 {
			t.Fatalf("volume %q is not source:target[:mode]", v)
		}
		out = append(out, mount{parts[0], parts[1]})
	}
	return out
}

// hostPath maps a container path back to the file under deploy/ mounted
// there, or "" when no bind mount covers it.
func hostPath(ms []mount, containerPath string) string {
	for _, m := range ms {
		if !strings.HasPrefix(m.source, ".") {
			continue
		}
		if containerPath == m.target {
			return m.source
		}
		if rest, ok := strings.CutPrefix(containerPath, m.target+"/"); ok {
			return filepath.Join(m.source, rest)
		}
	}
	return ""
}

func TestCompose(t *testing.T) {
	c := loadCompose(t)

	var names []string
	for name := range c.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	if diff := cmp.Diff([]string{"grafana", "prometheus", "redis", "relay"}, names); diff != "" {
		t.Fatalf("services (-want +got):\n%s", diff)
	}

	for _, name := range names {
		svc := c.Services[name]
		t.Run(name, func(t *testing.T) {
			for _, m := range mounts(t, svc.Volumes) {
				if strings.HasPrefix(m.source, ".") {
					if _, err := os.Stat(m.source); err != nil {
						t.Errorf("bind mount source %s: %v", m.source, err)
					}
				} else if _, ok := c.Volumes[m.source]; !ok {
					t.Errorf("named volume %s not declared under volumes", m.source)
				}
			}
			if len(svc.Networks) == 0 {
				t.Error("service on no named network")
			}
			for _, n := range svc.Networks {
				if _, ok := c.Networks[n]; !ok {
					t.Errorf("network %s not declared under networks", n)
				}
			}
			for _, dep := range svc.DependsOn {
				if _, ok := c.Services[dep]; !ok {
					t.Errorf("depends_on unknown service %s", dep)
				}
			}
		})
	}

	t.Run("relay build", func(t *testing.T) {
		b := c.Services["relay"].Build
		if b == nil {
			t.Fatal("relay has no build section")
		}
		if b.Context != ".." {
			t.Errorf("build context = %q, want .. (the repository root)", b.Context)
		}
		if _, err := os.Stat(filepath.Join(b.Context, "go.mod")); err != nil {
			t.Errorf("build context is not the module root: %v", err)
		}
		if _, err := os.Stat(filepath.Join(b.Context, b.Dockerfile)); err != nil {
			t.Skipf("Dockerfile not written yet: %v", err)
		}
	})

	t.Run("relay shares state through the redis service", func(t *testing.T) {
		relay := c.Services["relay"]
		u, err := url.Parse(relay.Environment["REDIS_URL"])
		if err != nil || u.Scheme != "redis" || u.Hostname() != "redis" {
			t.Errorf("relay REDIS_URL = %q, want redis://redis:6379/...", relay.Environment["REDIS_URL"])
		}
		if !slices.Contains(relay.DependsOn, "redis") {
			t.Error("relay does not depend on redis")
		}
	})

	t.Run("relay listens where prometheus scrapes", func(t *testing.T) {
		var pc promConfig
		readYAML(t, promFile, &pc)
		env := c.Services["relay"].Environment
		addr := env["METRICS_ADDR"] // /metrics is on RELAY_ADDR when unset
		if addr == "" {
			addr = env["RELAY_ADDR"]
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("relay METRICS_ADDR or RELAY_ADDR: %v", err)
		}
		want := "relay:" + port
		var targets []string
		for _, sc := range pc.ScrapeConfigs {
			if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
				t.Errorf("job %s scrapes %s, want /metrics", sc.JobName, sc.MetricsPath)
			}
			for _, st := range sc.StaticConfigs {
				targets = append(targets, st.Targets...)
			}
		}
		if !slices.Contains(targets, want) {
			t.Errorf("scrape targets %v lack %s", targets, want)
		}
	})

	t.Run("prometheus mounts its config and rules", func(t *testing.T) {
		svc := c.Services["prometheus"]
		ms := mounts(t, svc.Volumes)
		var config string
		for _, arg := range svc.Command {
			if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
				config = v
			}
		}
		if config == "" {
			t.Fatal("prometheus command has no --config.file")
		}
		host := hostPath(ms, config)
		if filepath.Clean(host) != filepath.Clean(promFile) {
			t.Fatalf("--config.file %s maps to %q, want %s", config, host, promFile)
		}
		var pc promConfig
		readYAML(t, promFile, &pc)
		if len(pc.RuleFiles) == 0 {
			t.Error("prometheus.yml loads no rule files")
		}
		for _, rf := range pc.RuleFiles {
			// Relative rule_files resolve against the config file's directory.
			p := hostPath(ms, path.Join(path.Dir(config), rf))
			if p == "" {
				t.Errorf("rule file %s is not mounted", rf)
				continue
			}
			if _, err := os.Stat(p); err != nil {
				t.Errorf("rule file %s: %v", rf, err)
			}
		}
	})

	t.Run("grafana mounts provisioning and the dashboard", func(t *testing.T) {
		ms := mounts(t, c.Services["grafana"].Volumes)
		if p := hostPath(ms, "/etc/grafana/provisioning/datasources/prometheus.yaml"); filepath.Clean(p) != filepath.Clean(dsFile) {
			t.Errorf("datasource provisioning maps to %q, want %s", p, dsFile)
		}
		var prov struct {
			Providers []struct {
				Type    string `json:"type"`
				Options struct {
					Path string `json:"path"`
				} `json:"options"`
			} `json:"providers"`
		}
		readYAML(t, providerFile, &prov)
		if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" {
			t.Fatalf("want one file dashboard provider, got %+v", prov.Providers)
		}
		dir := prov.Providers[0].Options.Path
		var found bool
		for _, m := range ms {
			if path.Dir(m.target) == dir && filepath.Clean(m.source) == filepath.Clean(dashFile) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is not mounted into the provider's path %s", dashFile, dir)
		}

		var ds struct {
			Datasources []struct {
				Type string `json:"type"`
				URL  string `json:"url"`
			} `json:"datasources"`
		}
		readYAML(t, dsFile, &ds)
		if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" {
			t.Fatalf("want one prometheus datasource, got %+v", ds.Datasources)
		}
		u, err := url.Parse(ds.Datasources[0].URL)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Services[u.Hostname()]; !ok {
			t.Errorf("datasource URL %s does not name a compose service", u)
		}
	})
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// panel is the part of a Grafana panel the tests look at; rows nest panels.
type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(dashFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
				AllValue   string `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashFile, err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard lacks uid or title")
	}

	fams := families(t)
	used := map[string]bool{}
	ids := map[int]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panel id %d used by %q and %q", p.ID, other, p.Title)
			}
			ids[p.ID] = p.Title
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no queries", p.Title)
			}
			for _, tg := range p.Targets {
				names := metricNames(tg.Expr)
				if len(names) == 0 {
					t.Errorf("panel %q: query selects no metric: %s", p.Title, tg.Expr)
				}
				for _, n := range names {
					if !knownSeries(fams, n) {
						t.Errorf("panel %q uses %q, not a relay metric family", p.Title, n)
					}
					used[strings.TrimSuffix(n, "_bucket")] = true
				}
				for _, sel := range unfilteredSelectors(tg.Expr, names) {
					t.Errorf("panel %q: %s is not filtered by the job and instance variables", p.Title, sel)
				}
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)

	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		vars[v.Name] = v.Definition
		m := reLabelValues.FindStringSubmatch(v.Definition)
		if m == nil || !knownSeries(fams, m[1]) {
			t.Errorf("variable %s: %q does not query a relay metric family", v.Name, v.Definition)
		}
		// "All" must stand for the relay's jobs, not for any value: an
		// allValue of ".*" would plot every Go target in Prometheus.
		if v.Name == "job" && v.AllValue != "" {
			t.Errorf("variable job: allValue %q; leave it unset so that All lists the relay's jobs", v.AllValue)
		}
	}
	wantVars := map[string]string{
		"job":      "label_values(pulsedive_relay_build_info, job)",
		"instance": `label_values(pulsedive_relay_build_info{job=~"$job"}, instance)`,
	}
	if diff := cmp.Diff(wantVars, vars); diff != "" {
		t.Errorf("query variables (-want +got):\n%s", diff)
	}

	// What the dashboard must show.
	for _, want := range []string{
		"pulsedive_relay_http_requests_total",
		"pulsedive_relay_http_request_duration_seconds",
		"pulsedive_relay_pulsedive_requests_total",
		"pulsedive_relay_cache_requests_total",
		"pulsedive_relay_limiter_wait_seconds",
		"pulsedive_relay_pulsedive_in_flight",
		"pulsedive_relay_breakers",
		"pulsedive_relay_errors_total",
		"pulsedive_relay_auth_failures_total",
		"pulsedive_relay_jwks_fetches_total",
		"pulsedive_relay_admission_refusals_total",
		"pulsedive_relay_admission_in_use",
		"pulsedive_relay_cluster_state",
		"pulsedive_relay_cache_bytes",
		"pulsedive_relay_cache_entries",
		"pulsedive_relay_cache_evictions_total",
		"pulsedive_relay_cache_rejections_total",
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
}

// unfilteredSelectors returns the selectors of expr, for the metric names
// given, that lack the dashboard's job and instance filters: every series
// a panel plots must be the selected relay's, never another job's.
func unfilteredSelectors(expr string, names []string) []string {
	var bad []string
	for _, name := range names {
		re := regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `\b(\{[^}]*\})?`)
		for _, m := range re.FindAllStringSubmatch(expr, -1) {
			if !strings.Contains(m[1], `job=~"$job"`) || !strings.Contains(m[1], `instance=~"$instance"`) {
				bad = append(bad, m[0])
			}
		}
	}
	return bad
}

func TestUnfilteredSelectors(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`go_goroutines{job=~"$job", instance=~"$instance"}`, nil},
		{`go_goroutines{instance=~"$instance"}`, []string{`go_goroutines{instance=~"$instance"}`}},
		{`process_resident_memory_bytes`, []string{`process_resident_memory_bytes`}},
		{`sum(rate(a_total{job=~"$job", instance=~"$instance", code="x"}[5m])) / sum(rate(a_total{job=~"$job"}[5m]))`, []string{`a_total{job=~"$job"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, unfilteredSelectors(tt.expr, metricNames(tt.expr))); diff != "" {
				t.Errorf("unfiltered selectors (-want +got):\n%s", diff)
			}
		})
	}
}
