# The two commands of the README: `make run` and `make test`. Each creates the virtual
# environment in .venv the first time (about a minute, no compiling) and is quick after.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FACE_RECOGNITION := face_recognition==1.3.0

.PHONY: run test bench install install-dev clean

run: $(VENV)/.installed
	$(BIN)/python main.py serve

test: $(VENV)/.installed-dev
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

clean:
	rm -rf $(VENV)
