package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// ServiceAccountToken creates the service account namespace/name (and the
// namespace), binds it to the ClusterRoles in roleFiles (paths under the
// repository's top directory, such as config/rbac/metrics_reader_role.yaml),
// waits until the API server's authorizer allows it each role's rules, and
// returns a token for it.
func (c *Cluster) ServiceAccountToken(ctx context.Context, namespace, name string, roleFiles ...string) (string, error) {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return "", err
	}
	if err := c.CreateNamespaces(ctx, namespace); err != nil {
		return "", err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("localcluster: create service account %s/%s: %w", namespace, name, err)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	user := "system:serviceaccount:" + namespace + ":" + name
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
	for _, file := range roleFiles {
		raw, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			return "", err
		}
		var role rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict(raw, &role); err != nil {
			return "", fmt.Errorf("localcluster: %s: %w", file, err)
		}
		role.Name = namespace + "-" + name + "-" + role.Name
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil {
			return "", fmt.Errorf("localcluster: create ClusterRole from %s: %w", file, err)
		}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}},
		}, metav1.CreateOptions{}); err != nil {
			return "", fmt.Errorf("localcluster: bind %s: %w", role.Name, err)
		}
		// The authorizer learns of bindings from a watch; a caller that asked
		// before it had would be refused.
		for _, spec := range ruleChecks(role.Rules) {
			spec.User, spec.Groups = user, groups
			err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
				return err == nil && r.Status.Allowed, err
			})
			if err != nil {
				return "", fmt.Errorf("localcluster: %s is not allowed what %s grants: %w", user, file, err)
			}
		}
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("localcluster: token for %s: %w", user, err)
	}
	return tr.Status.Token, nil
}

// ruleChecks is one access review per rule: its first verb on its first URL
// or its first resource.
func ruleChecks(rules []rbacv1.PolicyRule) []authzv1.SubjectAccessReviewSpec {
	var specs []authzv1.SubjectAccessReviewSpec
	for _, r := range rules {
		if len(r.Verbs) == 0 {
			continue
		}
		switch {
		case len(r.NonResourceURLs) > 0:
			specs = append(specs, authzv1.SubjectAccessReviewSpec{NonResourceAttributes: &authzv1.NonResourceAttributes{
				Path: r.NonResourceURLs[0], Verb: r.Verbs[0]}})
		case len(r.Resources) > 0 && len(r.APIGroups) > 0:
			specs = append(specs, authzv1.SubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
				Group: r.APIGroups[0], Resource: r.Resources[0], Verb: r.Verbs[0]}})
		}
	}
	return specs
}
