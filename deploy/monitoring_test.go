package deploy_test

import (
	"bufio"
	"bytes"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// update rewrites kubernetes/prometheusrule.yaml from prometheus/rules.yml:
//
//	go test ./deploy -run TestPrometheusRuleEqualsRulesFile -update
var update = flag.Bool("update", false, "rewrite kubernetes/prometheusrule.yaml from prometheus/rules.yml")

const (
	// relayJob is the job label every scrape configuration gives the
	// relay, and the one PulsediveRelayDown selects.
	relayJob = "pulsedive-relay"

	k8sPromFile   = "prometheus/kubernetes.yml"
	composeTLS    = "docker-compose.tls.yml"
	runbookFile   = "../docs/RUNBOOK.md"
	dockerfile    = "../Dockerfile"
	dockerignore  = "../.dockerignore"
	rootGoMod     = "../go.mod"
	ruleFileGroup = "groups:\n"
)

// repositoryURL is the relay's repository on GitHub, from its module path.
func repositoryURL(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(rootGoMod)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if mod, ok := strings.CutPrefix(line, "module "); ok {
			mod = strings.TrimSpace(mod)
			if !strings.HasPrefix(mod, "github.com/") {
				t.Fatalf("module %s is not on GitHub", mod)
			}
			return "https://" + mod
		}
	}
	t.Fatal("go.mod names no module")
	return ""
}

// ruleGroups decodes rules.yml strictly into prometheus-operator's types,
// which are Prometheus's rule file format.
func ruleGroups(t *testing.T) []monitoringv1.RuleGroup {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("%s: strict decode into []monitoringv1.RuleGroup: %v", rulesFile, err)
	}
	return rf.Groups
}

// alertRules are the alerting rules of rules.yml.
func alertRules(t *testing.T) []monitoringv1.Rule {
	t.Helper()
	var out []monitoringv1.Rule
	for _, g := range ruleGroups(t) {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no alert", rulesFile)
	}
	return out
}

// TestPrometheusRuleEqualsRulesFile: the PrometheusRule carries the groups
// of rules.yml, every field equal, so prometheus-operator users get the
// alerts promtool tests.
func TestPrometheusRuleEqualsRulesFile(t *testing.T) {
	if *update {
		writePrometheusRule(t)
	}
	m := loadManifests(t)
	if diff := cmp.Diff(ruleGroups(t), m.prometheusRule.Spec.Groups); diff != "" {
		t.Errorf("kubernetes/prometheusrule.yaml groups differ from %s (-rules.yml +PrometheusRule); run: go test ./deploy -run %s -update\n%s", rulesFile, t.Name(), diff)
	}
	if diff := cmp.Diff(m.deploy.Labels, m.prometheusRule.Labels); diff != "" {
		t.Errorf("PrometheusRule labels (-Deployment's +PrometheusRule's):\n%s", diff)
	}
}

// writePrometheusRule rewrites prometheusrule.yaml: its header, then the
// groups of rules.yml under spec, comments and all.
func writePrometheusRule(t *testing.T) {
	t.Helper()
	file := filepath.Join(k8sDir, "prometheusrule.yaml")
	old, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	head, _, ok := bytes.Cut(old, []byte("spec:\n"))
	if !ok {
		t.Fatalf("%s has no spec: line", file)
	}
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(rules, []byte("\n"+ruleFileGroup))
	if i < 0 {
		t.Fatalf("%s has no groups: line", rulesFile)
	}
	var out bytes.Buffer
	out.Write(head)
	out.WriteString("spec:\n")
	sc := bufio.NewScanner(bytes.NewReader(rules[i+1:]))
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			out.WriteString("  " + line)
		}
		out.WriteString("\n")
	}
	if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading: lower case,
// punctuation dropped, spaces as hyphens.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// runbookSections returns the headings of RUNBOOK.md by anchor.
func runbookSections(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(runbookFile)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	inFence := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		out[githubAnchor(heading)] = heading
	}
	return out
}

func TestGithubAnchor(t *testing.T) {
	tests := []struct{ heading, want string }{
		{"PulsediveRelayDown", "pulsediverelaydown"},
		{"What to do", "what-to-do"},
		{"Logs, metrics: where to look", "logs-metrics-where-to-look"},
		{"RELAY_JWKS_HOSTS and SSL_CERT_FILE", "relay_jwks_hosts-and-ssl_cert_file"},
	}
	for _, tt := range tests {
		if got := githubAnchor(tt.heading); got != tt.want {
			t.Errorf("githubAnchor(%q) = %q, want %q", tt.heading, got, tt.want)
		}
	}
}

// TestRunbookURLs: every alert links, by an absolute URL of the
// repository, to the section of docs/RUNBOOK.md named after it, and every
// alert section of the runbook belongs to an alert.
func TestRunbookURLs(t *testing.T) {
	sections := runbookSections(t)
	base := repositoryURL(t) + "/blob/main/docs/RUNBOOK.md"
	var alerts []string
	for _, r := range alertRules(t) {
		alerts = append(alerts, r.Alert)
		t.Run(r.Alert, func(t *testing.T) {
			want := base + "#" + githubAnchor(r.Alert)
			if got := r.Annotations["runbook_url"]; got != want {
				t.Errorf("runbook_url = %q, want %q", got, want)
			}
			if heading, ok := sections[githubAnchor(r.Alert)]; !ok || heading != r.Alert {
				t.Errorf("%s has no section %q (anchor #%s)", runbookFile, r.Alert, githubAnchor(r.Alert))
			}
		})
	}
	for _, heading := range sections {
		if strings.HasPrefix(heading, "PulsediveRelay") && !slices.Contains(alerts, heading) {
			t.Errorf("%s has a section %q, which is no alert of %s", runbookFile, heading, rulesFile)
		}
	}
}

// k8sPromConfig is kubernetes.yml, decoded strictly: Debian's promtool is
// built without Kubernetes discovery and cannot check it, so this test
// does, down to the relabelling.
type k8sPromConfig struct {
	Global struct {
		ScrapeInterval     string `json:"scrape_interval"`
		EvaluationInterval string `json:"evaluation_interval"`
	} `json:"global"`
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName             string `json:"job_name"`
		ScrapeInterval      string `json:"scrape_interval"`
		ScrapeTimeout       string `json:"scrape_timeout"`
		KubernetesSDConfigs []struct {
			Role string `json:"role"`
		} `json:"kubernetes_sd_configs"`
		RelabelConfigs []relabelConfig `json:"relabel_configs"`
	} `json:"scrape_configs"`
}

// relabelConfig is one of Prometheus's relabel_configs.
type relabelConfig struct {
	SourceLabels []string `json:"source_labels"`
	Separator    *string  `json:"separator"`
	Regex        *string  `json:"regex"`
	TargetLabel  string   `json:"target_label"`
	Replacement  *string  `json:"replacement"`
	Action       string   `json:"action"`
}

// relabel applies cfgs to ls as Prometheus does for the actions the
// deploy files use (replace, keep, drop), and reports whether the target
// is kept.
func relabel(t *testing.T, ls map[string]string, cfgs []relabelConfig) bool {
	t.Helper()
	for _, c := range cfgs {
		sep, expr, repl := ";", "(.*)", "$1"
		if c.Separator != nil {
			sep = *c.Separator
		}
		if c.Regex != nil {
			expr = *c.Regex
		}
		if c.Replacement != nil {
			repl = *c.Replacement
		}
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			t.Fatalf("relabel regex %q: %v", expr, err)
		}
		vals := make([]string, len(c.SourceLabels))
		for i, l := range c.SourceLabels {
			vals[i] = ls[l]
		}
		val := strings.Join(vals, sep)
		switch c.Action {
		case "", "replace":
			m := re.FindStringSubmatchIndex(val)
			if m == nil {
				continue
			}
			out := string(re.ExpandString(nil, repl, val, m))
			if out == "" {
				delete(ls, c.TargetLabel)
				continue
			}
			ls[c.TargetLabel] = out
		case "keep":
			if !re.MatchString(val) {
				return false
			}
		case "drop":
			if re.MatchString(val) {
				return false
			}
		default:
			t.Fatalf("relabel action %q: not simulated by this test", c.Action)
		}
	}
	return true
}

// sanitize is how Kubernetes discovery turns a label or annotation name
// into part of a Prometheus label name.
func sanitize(name string) string {
	return regexp.MustCompile(`[^a-zA-Z0-9_]`).ReplaceAllString(name, "_")
}

// podTarget is the target Kubernetes pod discovery makes of a pod of the
// given labels and annotations for its container port.
func podTarget(job string, podLabels, annotations map[string]string, port int32) map[string]string {
	ls := map[string]string{
		"job":                         job,
		"__address__":                 "10.1.2.3:" + strconv.Itoa(int(port)),
		"__metrics_path__":            "/metrics",
		"__scheme__":                  "http",
		"__meta_kubernetes_pod_ip":    "10.1.2.3",
		"__meta_kubernetes_pod_name":  "pod-1",
		"__meta_kubernetes_namespace": "relay",
	}
	for k, v := range podLabels {
		ls["__meta_kubernetes_pod_label_"+sanitize(k)] = v
	}
	for k, v := range annotations {
		ls["__meta_kubernetes_pod_annotation_"+sanitize(k)] = v
	}
	return ls
}

// TestKubernetesScrapeConfig: Prometheus in the cluster, configured with
// kubernetes.yml, scrapes the relay's pods at their annotated port and
// path under the relay's job, and nothing else.
func TestKubernetesScrapeConfig(t *testing.T) {
	data, err := os.ReadFile(k8sPromFile)
	if err != nil {
		t.Fatal(err)
	}
	var pc k8sPromConfig
	if err := yaml.UnmarshalStrict(data, &pc); err != nil {
		t.Fatalf("%s: %v", k8sPromFile, err)
	}
	if diff := cmp.Diff([]string{"rules.yml"}, pc.RuleFiles); diff != "" {
		t.Errorf("rule_files (-want +got):\n%s", diff)
	}
	if len(pc.ScrapeConfigs) != 1 || len(pc.ScrapeConfigs[0].KubernetesSDConfigs) != 1 || pc.ScrapeConfigs[0].KubernetesSDConfigs[0].Role != "pod" {
		t.Fatalf("want one scrape job with Kubernetes pod discovery, got %+v", pc.ScrapeConfigs)
	}
	sc := pc.ScrapeConfigs[0]

	m := loadManifests(t)
	pod := m.deploy.Spec.Template
	c := relayContainer(t, &m.deploy)
	redisPod := m.redis.Spec.Template
	noScrape := map[string]string{}
	for k, v := range pod.Annotations {
		noScrape[k] = v
	}
	noScrape["prometheus.io/scrape"] = "false"

	tests := []struct {
		name        string
		labels      map[string]string
		annotations map[string]string
		port        int32
		want        map[string]string // the target's job, address and path; nil: dropped
	}{
		{"the relay's pod", pod.Labels, pod.Annotations, c.Ports[0].ContainerPort,
			map[string]string{"job": relayJob, "__address__": "10.1.2.3:" + pod.Annotations["prometheus.io/port"], "__metrics_path__": pod.Annotations["prometheus.io/path"]}},
		{"the relay's pod not asking to be scraped", pod.Labels, noScrape, c.Ports[0].ContainerPort, nil},
		{"the Redis pod", redisPod.Labels, redisPod.Annotations, 6379, nil},
		{"another application's annotated pod", map[string]string{"app.kubernetes.io/name": "other"}, pod.Annotations, 8080, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls := podTarget(sc.JobName, tt.labels, tt.annotations, tt.port)
			if !relabel(t, ls, sc.RelabelConfigs) {
				if tt.want != nil {
					t.Fatalf("target dropped, want it scraped as %v", tt.want)
				}
				return
			}
			if tt.want == nil {
				t.Fatalf("target kept (%v), want it dropped", ls)
			}
			got := map[string]string{"job": ls["job"], "__address__": ls["__address__"], "__metrics_path__": ls["__metrics_path__"]}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("target (-want +got):\n%s", diff)
			}
		})
	}
}

// TestJobNames: every way of scraping the relay in deploy/ gives it the
// job label PulsediveRelayDown selects, so that the alert neither misses a
// relay that is down nor fires for one that is scraped under another name.
func TestJobNames(t *testing.T) {
	got := map[string]string{}

	var pc promConfig
	readYAML(t, promFile, &pc)
	for _, sc := range pc.ScrapeConfigs {
		got[promFile] = sc.JobName
	}

	var kc k8sPromConfig
	readYAML(t, k8sPromFile, &kc)
	for _, sc := range kc.ScrapeConfigs {
		got[k8sPromFile] = sc.JobName
	}

	// prometheus-operator names the job after the Service's jobLabel
	// label, or after the Service when it has none.
	m := loadManifests(t)
	job := m.service.Name
	if l := m.serviceMonitor.Spec.JobLabel; l != "" {
		if v, ok := m.service.Labels[l]; ok {
			job = v
		}
	}
	got["kubernetes/servicemonitor.yaml"] = job

	for _, r := range alertRules(t) {
		if r.Alert != "PulsediveRelayDown" {
			continue
		}
		re := regexp.MustCompile(`up\{job="([^"]*)"\}`)
		ms := re.FindAllStringSubmatch(r.Expr.String(), -1)
		if len(ms) != 2 {
			t.Fatalf("PulsediveRelayDown: %q, want up{job=...} twice (down, and absent)", r.Expr.String())
		}
		for i, m := range ms {
			got[rulesFile+" PulsediveRelayDown "+strconv.Itoa(i)] = m[1]
		}
	}

	want := map[string]string{}
	for k := range got {
		want[k] = relayJob
	}
	if len(got) != 5 {
		t.Errorf("found %d job names, want 5: %v", len(got), got)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("job names (-want +got):\n%s", diff)
	}
}

func TestServiceMonitor(t *testing.T) {
	m := loadManifests(t)
	sm := m.serviceMonitor.Spec

	sel, err := metav1.LabelSelectorAsSelector(&sm.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(m.service.Labels)) {
		t.Errorf("selector %v does not select the relay's Service (labels %v)", sel, m.service.Labels)
	}
	if sel.Matches(labels.Set(m.redisService.Labels)) {
		t.Errorf("selector %v selects the Redis Service too", sel)
	}
	if len(sm.Endpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(sm.Endpoints))
	}
	ep := sm.Endpoints[0]
	type view struct{ Port, Path, Scheme string }
	got := view{ep.Port, ep.Path, ep.Scheme.String()}
	want := view{m.service.Spec.Ports[0].Name, "/metrics", "http"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoint (-want +got):\n%s", diff)
	}
	if addr := m.configMap.Data["METRICS_ADDR"]; addr != "" {
		t.Errorf("METRICS_ADDR = %q but the ServiceMonitor scrapes the Service's port %s", addr, ep.Port)
	}
	if diff := cmp.Diff(m.deploy.Labels, m.serviceMonitor.Labels); diff != "" {
		t.Errorf("ServiceMonitor labels (-Deployment's +ServiceMonitor's):\n%s", diff)
	}
}

// relayRoutes are the endpoints Threat Response calls (CONTRACT.md
// section 1); /metrics, /healthz and /readyz are for the cluster alone.
var relayRoutes = []string{
	"/deliberate/observables", "/health", "/observe/observables", "/refer/observables", "/version", "/watchdog",
}

// TestIngress: HTTPS at the edge with a certificate cert-manager manages,
// routing exactly the relay's public endpoints to its Service.
func TestIngress(t *testing.T) {
	m := loadManifests(t)
	ing := m.ingress

	issuer := ing.Annotations["cert-manager.io/cluster-issuer"] + ing.Annotations["cert-manager.io/issuer"]
	if issuer == "" {
		t.Error("no cert-manager.io/cluster-issuer or cert-manager.io/issuer annotation: nothing obtains the certificate")
	}

	var tlsHosts []string
	for _, tls := range ing.Spec.TLS {
		if tls.SecretName == "" {
			t.Errorf("tls entry %v names no Secret for cert-manager to fill", tls.Hosts)
		}
		tlsHosts = append(tlsHosts, tls.Hosts...)
	}
	if len(ing.Spec.Rules) == 0 {
		t.Fatal("no rules")
	}
	for _, rule := range ing.Spec.Rules {
		t.Run(rule.Host, func(t *testing.T) {
			if rule.Host == "" || !slices.Contains(tlsHosts, rule.Host) {
				t.Errorf("host %q is not covered by tls hosts %v: it would be served over plain HTTP", rule.Host, tlsHosts)
			}
			if rule.HTTP == nil {
				t.Fatal("no http paths")
			}
			var paths []string
			for _, p := range rule.HTTP.Paths {
				paths = append(paths, p.Path)
				if p.PathType == nil || *p.PathType != networkingv1.PathTypeExact {
					t.Errorf("path %s: pathType %s, want Exact (a prefix would expose more than the endpoint)", p.Path, pathTypeText(p.PathType))
				}
				b := p.Backend.Service
				if b == nil || b.Name != m.service.Name || b.Port.Name != m.service.Spec.Ports[0].Name {
					t.Errorf("path %s: backend %+v, want Service %s port %s", p.Path, p.Backend, m.service.Name, m.service.Spec.Ports[0].Name)
				}
			}
			sort.Strings(paths)
			if diff := cmp.Diff(relayRoutes, paths); diff != "" {
				t.Errorf("routed paths (-want +got):\n%s", diff)
			}
		})
	}
}

// TestComposeTLS: the TLS overlay hands the relay a certificate and key
// through a read-only mount of deploy/tls, and Prometheus keeps scraping
// the plain metrics listener.
func TestComposeTLS(t *testing.T) {
	data, err := os.ReadFile(composeTLS)
	if err != nil {
		t.Fatal(err)
	}
	var overlay struct {
		Services map[string]struct {
			Environment map[string]string `json:"environment"`
			Volumes     []string          `json:"volumes"`
		} `json:"services"`
	}
	if err := yaml.UnmarshalStrict(data, &overlay); err != nil {
		t.Fatalf("%s: %v", composeTLS, err)
	}
	relay, ok := overlay.Services["relay"]
	if !ok || len(overlay.Services) != 1 {
		t.Fatalf("the overlay changes services %v, want the relay alone", slices.Sorted(maps.Keys(overlay.Services)))
	}
	for _, v := range relay.Volumes {
		if !strings.HasSuffix(v, ":ro") {
			t.Errorf("volume %q is not read-only", v)
		}
	}
	ms := mounts(t, relay.Volumes)
	for _, name := range []string{"RELAY_TLS_CERT_FILE", "RELAY_TLS_KEY_FILE"} {
		file := relay.Environment[name]
		host := hostPath(ms, file)
		if file == "" || host == "" {
			t.Errorf("%s = %q, not in a mounted directory", name, file)
			continue
		}
		if _, err := os.Stat(filepath.Dir(host)); err != nil {
			t.Errorf("%s: the directory mounted for it: %v", name, err)
		}
	}
	base := loadCompose(t)
	if base.Services["relay"].Environment["METRICS_ADDR"] == "" {
		t.Error("the base compose file serves /metrics on RELAY_ADDR, which TLS would make HTTPS for Prometheus: set METRICS_ADDR")
	}
}

// TestDockerfile reads the Dockerfile (no container engine runs here):
// the Go release of go.mod's toolchain line, a cross-compiled static
// binary from the relay's module alone, OCI labels, a non-root distroless
// image.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	// Instructions, with continuation lines joined and comments dropped.
	var instrs []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if more, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(trimmed)
		if s := strings.TrimSpace(cur.String()); s != "" {
			instrs = append(instrs, s)
		}
		cur.Reset()
	}
	var froms []string
	for _, in := range instrs {
		if strings.HasPrefix(in, "FROM ") {
			froms = append(froms, in)
		}
	}
	if len(froms) != 2 {
		t.Fatalf("%d stages, want 2 (build, image): %v", len(froms), froms)
	}
	all := strings.Join(instrs, "\n")

	t.Run("Go release is go.mod's toolchain", func(t *testing.T) {
		mod, err := os.ReadFile(rootGoMod)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^toolchain go(\S+)$`).FindSubmatch(mod)
		if m == nil {
			t.Fatal("go.mod has no toolchain line")
		}
		want := "FROM --platform=$BUILDPLATFORM golang:" + string(m[1]) + "-"
		if !strings.HasPrefix(froms[0], want) {
			t.Errorf("build stage %q, want %q... (the build machine's platform, go.mod's Go)", froms[0], want)
		}
	})
	t.Run("cross-compiled static binary of the relay's module", func(t *testing.T) {
		for _, want := range []string{
			"ARG TARGETOS TARGETARCH", "GOOS=$TARGETOS GOARCH=$TARGETARCH", "CGO_ENABLED=0", "GOWORK=off",
			"go build -trimpath", "./cmd/relay", "--mount=type=cache,target=/go/pkg/mod",
		} {
			if !strings.Contains(all, want) {
				t.Errorf("no %q", want)
			}
		}
		if regexp.MustCompile(`go mod download\s*($|\n|&)`).MatchString(all) {
			t.Error("go mod download fetches every module of go.mod, test and tool ones too; go build fetches what the binary links")
		}
	})
	t.Run("the version flag reaches a variable", func(t *testing.T) {
		const module = "github.com/pulsedive-relay/relay/"
		m := regexp.MustCompile(`-X ` + regexp.QuoteMeta(module) + `([\w/]+)\.(\w+)=`).FindStringSubmatch(all)
		if m == nil {
			t.Fatal("no -X " + module + "<package>.<var>= in the build")
		}
		src, err := filepath.Glob("../" + m[1] + "/*.go")
		if err != nil {
			t.Fatal(err)
		}
		decl := regexp.MustCompile(`(?m)^\s*(var\s+|\t)` + m[2] + `\s+(string\s*)?=`)
		found := false
		for _, f := range src {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			text, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			found = found || decl.Match(text)
		}
		if !found {
			t.Errorf("-X %s%s.%s names no string variable of that package: the version would not be set", module, m[1], m[2])
		}
	})
	t.Run("OCI labels", func(t *testing.T) {
		for _, key := range []string{"title", "description", "source", "version", "revision", "licenses"} {
			if !strings.Contains(all, "org.opencontainers.image."+key+"=") {
				t.Errorf("no label org.opencontainers.image.%s", key)
			}
		}
		if want := `org.opencontainers.image.source="` + repositoryURL(t) + `"`; !strings.Contains(all, want) {
			t.Errorf("no %s", want)
		}
		for _, arg := range []string{"VERSION", "REVISION", "LICENSES"} {
			if !regexp.MustCompile(`(?m)^ARG ` + arg + `\b`).MatchString(all) {
				t.Errorf("no ARG %s: the label cannot be set at build time", arg)
			}
		}
	})
	t.Run("non-root distroless image", func(t *testing.T) {
		if !regexp.MustCompile(`^FROM gcr\.io/distroless/static[-\w]*:nonroot$`).MatchString(froms[1]) {
			t.Errorf("image stage %q, want distroless static nonroot", froms[1])
		}
		if !strings.Contains(all, "USER 65532:65532") {
			t.Error("no USER 65532:65532")
		}
	})
	t.Run("dockerignore keeps the other module out", func(t *testing.T) {
		ignore, err := os.ReadFile(dockerignore)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(ignore), "\n")
		for _, want := range []string{"deploy", "go.work", ".git"} {
			if !slices.Contains(lines, want) {
				t.Errorf(".dockerignore lacks %s", want)
			}
		}
		for _, line := range lines {
			if line == "**/testdata" || line == "pulsedive" {
				t.Errorf(".dockerignore drops %s, which the binary embeds", line)
			}
		}
	})
}

func pathTypeText(p *networkingv1.PathType) string {
	if p == nil {
		return "unset"
	}
	return string(*p)
}
