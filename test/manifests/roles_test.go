package manifests_test

import (
	"context"
	"fmt"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// TestUserRoles: the roles for people, as config/default installs them, and
// the sample bindings, grant exactly what docs/security.md's table says. Each
// check asks the real API server as the user (impersonation), which
// authorizes with the installed roles and the aggregation into view.
func TestUserRoles(t *testing.T) {
	ctx := context.Background()
	// The user roles as installed (prefixed), then the sample bindings.
	out := kubectl(t, "kustomize", "config/default")
	var roles []byte
	for _, doc := range splitYAML(t, out) {
		var r rbacv1.ClusterRole
		if err := yaml.Unmarshal(doc, &r); err != nil {
			t.Fatal(err)
		}
		if r.Kind == "ClusterRole" && r.Labels["app.kubernetes.io/component"] == "user-role" {
			roles = append(append(roles, "---\n"...), doc...)
		}
	}
	kubectlIn(t, roles, "apply", "--server-side", "-f", "-")
	kubectl(t, "apply", "--server-side", "-f", "config/samples/tenants_namespace.yaml", "-f", "config/samples/rbac/bindings.yaml")
	// The sample binds tenants to the built-in view role, which includes
	// appquota-viewer through its aggregate-to-view label; aggregation is
	// the controller manager's work, and the local control plane runs none.
	// So the label is checked here, and the tenant's rights through a
	// binding of appquota-viewer itself.
	viewer := kubectl(t, "get", "clusterrole", "appquota-viewer", "-o", "jsonpath={.metadata.labels.rbac\\.authorization\\.k8s\\.io/aggregate-to-view}")
	if viewer != "true" {
		t.Errorf("appquota-viewer is not aggregated to view: label %q", viewer)
	}
	kubectl(t, "create", "rolebinding", "tenant-viewer", "-n", "tenants", "--clusterrole=appquota-viewer", "--group=tenant-acme")

	const (
		tenants = "tenants"
		other   = "other-tenant"
	)
	type check struct {
		verb, resource, sub, namespace string
		allowed                        bool
	}
	aq := func(verb, ns string, allowed bool) check { return check{verb, "appquotas", "", ns, allowed} }
	qp := func(verb string, allowed bool) check { return check{verb, "quotaprofiles", "", "", allowed} }
	// The table of docs/security.md, "Roles".
	table := []struct {
		who    string
		groups []string
		checks []check
	}{
		{"a tenant (appquota-viewer, through view, in its namespace)", []string{"tenant-acme"}, []check{
			aq("get", tenants, true), aq("list", tenants, true), {"get", "appquotas", "status", tenants, true},
			aq("create", tenants, false), aq("update", tenants, false), aq("patch", tenants, false), aq("delete", tenants, false),
			aq("get", other, false), qp("create", false), qp("update", false),
		}},
		{"sales (editor)", []string{"sales"}, []check{
			aq("get", tenants, true), aq("create", tenants, true), aq("update", tenants, true), aq("patch", tenants, true),
			aq("delete", tenants, true), aq("create", other, true), {"update", "appquotas", "status", tenants, false},
			qp("get", true), qp("list", true), qp("create", false), qp("update", false), qp("delete", false),
		}},
		{"the platform team (quotaprofile-admin)", []string{"platform"}, []check{
			qp("get", true), qp("create", true), qp("update", true), qp("patch", true), qp("delete", true),
			{"update", "quotaprofiles", "status", "", false},
			aq("get", tenants, true), aq("list", other, true), aq("create", tenants, false), aq("update", tenants, false),
		}},
		{"anyone else", []string{"nobody"}, []check{aq("get", tenants, false), qp("get", false)}},
	}
	for _, row := range table {
		t.Run(row.who, func(t *testing.T) {
			cfg := rest.CopyConfig(cluster.Config)
			cfg.Impersonate = rest.ImpersonationConfig{UserName: "user-" + row.groups[0], Groups: append(row.groups, "system:authenticated")}
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range row.checks {
				review := &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
					Group: "quota.appquota.io", Resource: c.resource, Subresource: c.sub, Verb: c.verb, Namespace: c.namespace,
				}}}
				got, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if got.Status.Allowed != c.allowed {
					t.Errorf("%s %s: allowed %v, want %v", c.verb, describe(c.resource, c.sub, c.namespace), got.Status.Allowed, c.allowed)
				}
			}
		})
	}
}

func describe(resource, sub, ns string) string {
	s := resource
	if sub != "" {
		s += "/" + sub
	}
	if ns != "" {
		s += fmt.Sprintf(" in %s", ns)
	}
	return s
}
