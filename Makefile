# appquota: see README.md. Tool and control-plane versions live in hack/versions.env.
include hack/versions.env

IMG ?= appquota/manager:dev
CONTROLLER_GEN := go run sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
# The local control plane (kube-apiserver, etcd, kubectl) is built once per machine, then
# cached: `assets=$$(hack/setup-envtest.sh) && ...` stops the recipe if that build fails.

.PHONY: all
all: build

.PHONY: manifests
manifests: ## CRDs, RBAC and webhook configuration from the markers in api/, controllers/, webhook/.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: ## DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: verify
verify: manifests generate ## Fails when generated files, go.mod or formatting are stale.
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
build:
	go build -o bin/manager ./cmd/manager
	go build -o bin/kubectl-appquota ./cmd/kubectl-appquota

.PHONY: docker-build
docker-build:
	docker build -t $(IMG) .
