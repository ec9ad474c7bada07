# appquota: see README.md. Tool and control-plane versions live in hack/versions.env.
include hack/versions.env

IMG ?= appquota/manager:dev
CONTROLLER_GEN := go run sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
# The local control plane (kube-apiserver, etcd, kubectl) is built once per machine, then
# cached: `assets=$$(hack/setup-envtest.sh) && ...` stops the recipe if that build fails.
# golangci-lint is built once per version into the same cache (a few minutes, cold).
TOOLS_CACHE ?= $(or $(APPQUOTA_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/appquota)
GOLANGCI_LINT := $(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint

.PHONY: all
all: build

.PHONY: help
help: ## List the targets and what they do.
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\n"} /^[a-zA-Z_0-9-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: manifests
manifests: ## CRDs, RBAC and webhook configuration from the markers in api/, controllers/, webhook/.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: ## DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint with .golangci.yml.
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	GOBIN=$(dir $@) GOFLAGS= go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: verify
verify: manifests generate lint ## Fails when generated files, go.mod or formatting are stale, or lint finds something.
	go mod tidy
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "files need gofmt"; exit 1; }
	go vet ./...
	@git diff --exit-code -- . || { echo "generated files are stale: run 'make manifests generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- api config go.mod go.sum)" || { git status --short; echo "untracked generated files: commit them"; exit 1; }

.PHONY: envtest
envtest: ## Build (or find in the cache) the local control plane and print its directory.
	@hack/setup-envtest.sh

.PHONY: engine
engine: ## Build (or find in the cache) envoyproxy/ratelimit and find (or install) redis-server; print both paths.
	@hack/setup-ratelimit.sh && hack/setup-redis.sh

.PHONY: test
test: ## Every unit and integration test, against a real kube-apiserver and etcd.
	assets=$$(hack/setup-envtest.sh) && rl=$$(hack/setup-ratelimit.sh) && redis=$$(hack/setup-redis.sh) && KUBEBUILDER_ASSETS="$$assets" RATELIMIT_BIN="$$rl" REDIS_SERVER="$$redis" go test ./... -count=1

FUZZTIME ?= 60s
.PHONY: fuzz
fuzz: ## Explore the validators with go's fuzzer (make test runs only the seed corpus).
	go test ./internal/validation -run XXX -fuzz FuzzAppQuota -fuzztime $(FUZZTIME)
	go test ./internal/validation -run XXX -fuzz FuzzQuotaProfile -fuzztime $(FUZZTIME)

.PHONY: bench
bench: ## The scale benchmarks (10,000 and 100,000 apps); rewrites the table in docs/benchmarks.md. Takes a while.
	assets=$$(hack/setup-envtest.sh) && rl=$$(hack/setup-ratelimit.sh) && redis=$$(hack/setup-redis.sh) && KUBEBUILDER_ASSETS="$$assets" RATELIMIT_BIN="$$rl" REDIS_SERVER="$$redis" go run ./test/bench -out docs/benchmarks.md

.PHONY: demo
demo: ## Run the operator on a local control plane with the samples applied; Ctrl-C stops it.
	go build -o bin/appquota-demo ./cmd/demo
	go build -o bin/kubectl-appquota ./cmd/kubectl-appquota
	assets=$$(hack/setup-envtest.sh) && rl=$$(hack/setup-ratelimit.sh) && redis=$$(hack/setup-redis.sh) && KUBEBUILDER_ASSETS="$$assets" RATELIMIT_BIN="$$rl" REDIS_SERVER="$$redis" exec bin/appquota-demo

.PHONY: run
run: ## Run the manager against the cluster of the current kubeconfig.
	go run ./cmd/manager --metrics-bind-address=0 --health-probe-bind-address=:8081

.PHONY: build
build: ## bin/manager and bin/kubectl-appquota.
	go build -o bin/manager ./cmd/manager
	go build -o bin/kubectl-appquota ./cmd/kubectl-appquota

.PHONY: plugin
plugin: ## dist/: kubectl-appquota archives for linux and darwin (amd64, arm64), sha256 sums, the filled krew manifest.
	hack/build-plugin.sh

.PHONY: docker-build
docker-build: ## The manager's container image (IMG=...).
	docker build -t $(IMG) .

.PHONY: faults
faults: ## The fault-injection suite (test/faults); rewrites the table in docs/reliability.md. Takes a while.
	assets=$$(hack/setup-envtest.sh) && KUBEBUILDER_ASSETS="$$assets" go run ./test/faults -out docs/reliability.md $(FAULTS_FLAGS)
