package docform_test

import (
	"testing"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/docform"
)

func TestUserParam(t *testing.T) {
	cases := map[string]string{
		"/app-id/{app_id}/users/{username}/x":                      "username",
		"/app-id/{app_id}/users/{userName}/user_channel":           "userName",
		"/app-id/{app_id}/users/{owner_username}/contacts/{uid}":   "owner_username",
		"/app-id/{app_id}/reaction/user/{userId}":                  "userId",
		"/app-id/{app_id}/chatgroups/{group_id}/users/{usernames}": "",
		"/app-id/{app_id}/messages/users":                          "",
	}
	for path, want := range cases {
		if got := docform.UserParam(quotav1.Route{Method: "GET", Path: path}); got != want {
			t.Errorf("UserParam(%s) = %q, want %q", path, got, want)
		}
	}
	explicit := quotav1.Route{Method: "GET", Path: "/a/{owner}/{username}", UserParam: "owner"}
	if got := docform.UserParam(explicit); got != "owner" {
		t.Errorf("explicit userParam: got %q", got)
	}
}
