// Package metricsauth guards the manager's metrics endpoint: a caller must send
// a bearer token the API server accepts (a TokenReview) and be allowed the
// request's verb on its path (a SubjectAccessReview), as with
// controller-runtime's filters.WithAuthenticationAndAuthorization.
//
// That filter builds on k8s.io/apiserver's delegating authenticator and
// authorizer, which link the API server's CEL libraries and feature gates and
// keep much of the manager's executable resident, most of it touched by their
// package initialisation, against the manager's memory target at 100,000 apps
// (docs/decisions/2026-11-27-metrics-auth-without-apiserver-libraries.md).
// This package asks the same two questions through client-go's typed clients
// and caches the answers as long, with apimachinery's LRU cache.
package metricsauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// The cache lifetimes are controller-runtime's filter's (its authenticator's
// and authorizer's); a refused token is remembered briefly, so that a client
// retrying a bad token does not send a TokenReview per attempt.
const (
	tokenTTL        = time.Minute
	tokenFailureTTL = 10 * time.Second
	allowTTL        = 5 * time.Minute
	denyTTL         = 30 * time.Second
	reviewTimeout   = 10 * time.Second
	// cacheSize bounds each cache: the endpoint has a few scrapers.
	cacheSize = 1024
)

// Filter returns a metrics server filter that authenticates and authorizes
// every request against the API server cfg reaches. The manager's service
// account needs create on tokenreviews and subjectaccessreviews
// (config/rbac/metrics_auth_role.yaml); a scraper needs get on the path
// (config/rbac/metrics_reader_role.yaml).
func Filter(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authnclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("metrics authentication client: %w", err)
	}
	authz, err := authzclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("metrics authorization client: %w", err)
	}
	g := &guard{
		tokens:    authn.TokenReviews(),
		access:    authz.SubjectAccessReviews(),
		users:     cache.NewLRUExpireCache(cacheSize),
		decisions: cache.NewLRUExpireCache(cacheSize),
	}
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			g.serve(log, next, w, req)
		}), nil
	}, nil
}

type guard struct {
	tokens authnclient.TokenReviewInterface
	access authzclient.SubjectAccessReviewInterface
	// users maps a token's sha256 to its *authnv1.UserInfo, or to nil when the
	// API server refused it; the token itself is not kept.
	users *cache.LRUExpireCache
	// decisions maps a user, verb and path to whether they are allowed.
	decisions *cache.LRUExpireCache
}

func (g *guard) serve(log logr.Logger, next http.Handler, w http.ResponseWriter, req *http.Request) {
	user, err := g.authenticate(req.Context(), bearerToken(req))
	if err != nil {
		log.Error(err, "Authentication failed")
		http.Error(w, "Authentication failed", http.StatusInternalServerError)
		return
	}
	if user == nil {
		log.V(4).Info("Authentication failed")
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	verb := strings.ToLower(req.Method)
	allowed, err := g.authorize(req.Context(), user, verb, req.URL.Path)
	if err != nil {
		msg := fmt.Sprintf("Authorization for user %s failed", user.Username)
		log.Error(err, msg)
		http.Error(w, msg, http.StatusInternalServerError)
		return
	}
	if !allowed {
		msg := fmt.Sprintf("Authorization denied for user %s", user.Username)
		log.V(4).Info(msg, "verb", verb, "path", req.URL.Path)
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	next.ServeHTTP(w, req)
}

// bearerToken is the token of an "Authorization: Bearer <token>" header, or
// "" when there is none.
func bearerToken(req *http.Request) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(req.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// authenticate returns who the token belongs to, or nil when there is no token
// or the API server does not accept it. An error (the API server unreachable)
// is not cached.
func (g *guard) authenticate(ctx context.Context, token string) (*authnv1.UserInfo, error) {
	if token == "" {
		return nil, nil
	}
	key := sha256.Sum256([]byte(token))
	if v, ok := g.users.Get(key); ok {
		return v.(*authnv1.UserInfo), nil
	}
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	review, err := g.tokens.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create TokenReview: %w", err)
	}
	if !review.Status.Authenticated {
		g.users.Add(key, (*authnv1.UserInfo)(nil), tokenFailureTTL)
		return nil, nil
	}
	user := review.Status.User
	g.users.Add(key, &user, tokenTTL)
	return &user, nil
}

// authorize asks whether user may send verb to the non-resource path.
func (g *guard) authorize(ctx context.Context, user *authnv1.UserInfo, verb, path string) (bool, error) {
	key := decisionKey(user, verb, path)
	if v, ok := g.decisions.Get(key); ok {
		return v.(bool), nil
	}
	extra := make(map[string]authzv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	review, err := g.access.Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:                  user.Username,
		UID:                   user.UID,
		Groups:                user.Groups,
		Extra:                 extra,
		NonResourceAttributes: &authzv1.NonResourceAttributes{Path: path, Verb: verb},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("create SubjectAccessReview: %w", err)
	}
	allowed := review.Status.Allowed && !review.Status.Denied
	ttl := denyTTL
	if allowed {
		ttl = allowTTL
	}
	g.decisions.Add(key, allowed, ttl)
	return allowed, nil
}

// decisionKey names everything a SubjectAccessReview's answer depends on.
func decisionKey(user *authnv1.UserInfo, verb, path string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q %q %q %q %q", user.Username, user.UID, verb, path, user.Groups)
	for _, k := range slices.Sorted(maps.Keys(user.Extra)) {
		fmt.Fprintf(&b, " %q=%q", k, []string(user.Extra[k]))
	}
	return b.String()
}
