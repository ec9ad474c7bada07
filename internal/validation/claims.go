package validation

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/reservation"
)

// Grant is what one namespace's AppQuotas may claim, as its Namespace's
// quotav1.AppIDsAnnotation says. The same rule is written in CEL in
// config/policy/appid_grants.yaml for the API server; test/webhook runs
// both over the same cases.
type Grant struct {
	// Namespace is the namespace granted.
	Namespace string
	// Annotated is false when the Namespace has no annotation: it may claim
	// nothing.
	Annotated bool
	// Entries are the annotation's entries, trimmed, empty ones dropped.
	Entries []string
}

// ParseGrant reads a Namespace's annotations.
func ParseGrant(namespace string, annotations map[string]string) Grant {
	g := Grant{Namespace: namespace}
	v, ok := annotations[quotav1.AppIDsAnnotation]
	if !ok {
		return g
	}
	g.Annotated = true
	for e := range strings.SplitSeq(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			g.Entries = append(g.Entries, e)
		}
	}
	return g
}

// Allows reports whether the grant covers appID: an entry equal to it, or
// an entry ending in '*' whose prefix it starts with ("*" covers all).
func (g Grant) Allows(appID string) bool {
	for _, e := range g.Entries {
		if prefix, ok := strings.CutSuffix(e, "*"); ok {
			if strings.HasPrefix(appID, prefix) {
				return true
			}
		} else if e == appID {
			return true
		}
	}
	return false
}

// Claim returns the error for an AppQuota whose namespace may not claim its
// appID under grant g (nil when it may). The message names the AppQuota's
// own namespace and its grant, never who else holds the ID.
func Claim(a *quotav1.AppQuota, g Grant) *field.Error {
	if g.Allows(a.Spec.AppID) {
		return nil
	}
	p := field.NewPath("spec", "appID")
	if !g.Annotated {
		return field.Forbidden(p, fmt.Sprintf(
			"namespace %q may not claim app ID %q: it has no %s annotation, so it may claim none; "+
				"the platform team grants app IDs to a namespace with that annotation (exact IDs, or prefixes ending in '*')",
			a.Namespace, a.Spec.AppID, quotav1.AppIDsAnnotation))
	}
	return field.Forbidden(p, fmt.Sprintf(
		"namespace %q may not claim app ID %q: its %s annotation allows only %q; ask the platform team to grant it",
		a.Namespace, a.Spec.AppID, quotav1.AppIDsAnnotation, strings.Join(g.Entries, ",")))
}

// Reserved returns the error for an AppQuota that claims an app ID held
// for another namespace at now (r, from reservation.Set.For), nil when r
// does not hold it against a. The message does not name the namespace the
// ID is held for: a refusal must not tell one tenant where another's app
// lives.
func Reserved(a *quotav1.AppQuota, r reservation.Reservation, now time.Time) *field.Error {
	if r.Namespace == a.Namespace || !now.Before(r.Until) {
		return nil
	}
	return field.Forbidden(field.NewPath("spec", "appID"), fmt.Sprintf(
		"app ID %q is reserved for the namespace that held it until %s: its AppQuota was deleted, and the ID stays with "+
			"that namespace for a while in case it is re-created",
		a.Spec.AppID, r.Until.UTC().Format(time.RFC3339)))
}

// ownerShown is how a refusal names the AppQuota that holds an appID: by
// name within the requester's own namespace, and not at all in another, so
// that a refusal does not tell one tenant where another's app lives.
func ownerShown(a *quotav1.AppQuota, owner string) string {
	ns, name := quotav1.SplitKey(owner)
	if ns == a.Namespace {
		return fmt.Sprintf("AppQuota %s in this namespace", name)
	}
	return "an AppQuota in another namespace"
}

// ChangedBy refuses a quotav1.ChangedByAnnotation that a request by user
// sets to anyone else: the API server stamps it (config/policy's
// MutatingAdmissionPolicy) on every change to the spec and keeps it
// otherwise, so a value that is new in this request and not the requester's
// is a forgery. old is nil on create.
func ChangedBy(old, a *quotav1.AppQuota, user string) field.ErrorList {
	v, ok := a.Annotations[quotav1.ChangedByAnnotation]
	if !ok || v == user {
		return nil
	}
	if old != nil {
		if ov, had := old.Annotations[quotav1.ChangedByAnnotation]; had && ov == v {
			return nil
		}
	}
	return field.ErrorList{field.Forbidden(field.NewPath("metadata", "annotations").Key(quotav1.ChangedByAnnotation), fmt.Sprintf(
		"records who changed the AppQuota and is stamped by the API server; it may be set only to the requester's own name (%q)", user))}
}
