# The two commands of the README: `make run` and `make test`. Each creates the virtual
# environment in .venv the first time (about a minute, no compiling) and is quick after.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FACE_RECOGNITION := face_recognition==1.3.0

.PHONY: run test bench install install-dev clean

# Flask-MonitoringDashboard's scripts, from the npm registry instead of its CDNs (see
# api/dashboard_assets.py); without npm the service runs and only the dashboard's charts miss.
DASHBOARD_ASSETS := api/static/vendor/.fetched

run: $(VENV)/.installed $(DASHBOARD_ASSETS)
	$(BIN)/python main.py serve

test: $(VENV)/.installed-dev $(DASHBOARD_ASSETS)
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
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

clean:
	rm -rf $(VENV)
