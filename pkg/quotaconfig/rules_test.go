package quotaconfig

import "testing"

// The document's other rules are tested through Validate (validate_test.go);
// these are the ones it does not apply, or applies only in part.

func TestMethodsAreTheResolversMethods(t *testing.T) {
	if len(methods) != numMethods {
		t.Fatalf("%d methods, numMethods %d", len(methods), numMethods)
	}
	for i, m := range methods {
		if methodIndex(m) != i {
			t.Errorf("methodIndex(%s) = %d, want %d", m, methodIndex(m), i)
		}
	}
	if ValidMethod("get") || ValidMethod("TRACE") || ValidMethod("") {
		t.Error("ValidMethod accepts a method outside the enum")
	}
}

func TestWindowSeconds(t *testing.T) {
	for w, want := range map[string]int64{WindowSecond: 1, WindowMinute: 60, WindowHour: 3600, WindowDay: 86400, "Week": 0, "second": 0, "": 0} {
		if got := WindowSeconds(w); got != want {
			t.Errorf("WindowSeconds(%q) = %d, want %d", w, got, want)
		}
	}
}

func TestRepeatedParam(t *testing.T) {
	for path, want := range map[string]string{
		"/app-id/{app_id}/users/{id}/friends/{id}": "id",
		"/app-id/{app_id}/users/{id}/friends/{ID}": "",
		"/app-id/{app_id}/users/{username}":        "",
		"/a/{x}{x}":                                "x",
	} {
		if got := RepeatedParam(path); got != want {
			t.Errorf("RepeatedParam(%s) = %q, want %q", path, got, want)
		}
	}
}

func TestConventionalUserParam(t *testing.T) {
	for path, want := range map[string]string{
		"/app-id/{app_id}/users/{username}/x":                      "username",
		"/app-id/{app_id}/users/{userName}/user_channel":           "userName",
		"/app-id/{app_id}/users/{owner_username}/contacts/{uid}":   "owner_username",
		"/app-id/{app_id}/reaction/user/{userId}":                  "userId",
		"/app-id/{app_id}/users/{USER_ID}":                         "USER_ID",
		"/app-id/{app_id}/chatgroups/{group_id}/users/{usernames}": "",
		"/app-id/{app_id}/messages/users":                          "",
		"/app-id/{app_id}/users/username":                          "",
	} {
		if got := ConventionalUserParam(path); got != want {
			t.Errorf("ConventionalUserParam(%s) = %q, want %q", path, got, want)
		}
	}
}

func TestRouteShape(t *testing.T) {
	a, b := RouteShape("GET", "/a/{x}/b"), RouteShape("GET", "/a/{y}/b")
	if a != b || a != "GET /a/{}/b" {
		t.Errorf("shapes %q and %q, want both GET /a/{}/b", a, b)
	}
	if RouteShape("PUT", "/a/{x}/b") == a || RouteShape("GET", "/a/x/b") == a {
		t.Error("another method or a literal has the same shape")
	}
}
