# syntax=docker/dockerfile:1
# ntt-label ML backend for Label Studio: gunicorn serving labelstudio_backend.wsgi:app on port 9090.
#
#   docker build -t ntt-label .                                   # CPU torch (default, small wheels)
#   docker build -t ntt-label:cu126 --build-arg TORCH_VARIANT=cu126 .   # CUDA 12.6 torch wheels
#   (docker compose passes NTT_TORCH_VARIANT from .env as this TORCH_VARIANT build arg)
#   docker build --build-arg TORCH_INDEX=https://my.mirror/whl/cpu .    # any PyTorch wheel index
#   docker run --gpus all -p 9090:9090 -e LABEL_STUDIO_URL=... -e LABEL_STUDIO_API_KEY=... \
#       -v ntt-models:/data/models -v ntt-cache:/data/cache ntt-label:cu126
#
# CUDA wheels bundle the CUDA runtime, so the slim base image serves both; the host needs the NVIDIA driver and the
# NVIDIA Container Toolkit. Checkpoints are not baked in: they are downloaded into /data/cache (NTT_CACHE_DIR) on
# first use, or put there by hand when the container is offline.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# cpu, or a CUDA tag of download.pytorch.org (cu118, cu121, cu124, cu126, ...)
ARG TORCH_VARIANT=cpu
# overrides the index derived from TORCH_VARIANT
ARG TORCH_INDEX=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt ./

# 1. torch + torchvision from the PyTorch index (the pins of requirements.txt; `2.x.y+cpu` satisfies `==2.x.y`);
# 2. sam2 is published as an sdist only, and its isolated build would pull a second (CUDA) torch from PyPI: build
#    it against the torch just installed, without its optional CUDA extension (not used by this backend);
# 3. everything else.
RUN set -eux; \
    index="${TORCH_INDEX:-https://download.pytorch.org/whl/${TORCH_VARIANT}}"; \
    pip install --upgrade pip setuptools wheel; \
    pip install --index-url "$index" $(grep -E '^(torch|torchvision)==' requirements.txt); \
    SAM2_BUILD_CUDA=0 SAM2_BUILD_ALLOW_ERRORS=1 pip install --no-build-isolation \
        $(grep -E '^sam2([<>=!~ ]|$)' requirements.txt); \
    pip install -r requirements.txt; \
    python -c "import torch, sam2, flask, gunicorn, label_studio_sdk; print('torch', torch.__version__)"

COPY ntt_engine/ ./ntt_engine/
COPY labelstudio_backend/ ./labelstudio_backend/

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin ntt \
    && mkdir -p /data/models /data/cache \
    && chown -R ntt:ntt /data

# The label-studio-ml environment names (see README); NTT_PRESET picks the engine (paper | fast | synthetic).
ENV PYTHONPATH=/app \
    HOME=/home/ntt \
    HOST=0.0.0.0 \
    PORT=9090 \
    WORKERS=1 \
    THREADS=8 \
    LOG_LEVEL=INFO \
    MODEL_DIR=/data/models \
    NTT_CACHE_DIR=/data/cache \
    NTT_PRESET=fast

USER ntt
VOLUME ["/data/models", "/data/cache"]
EXPOSE 9090

# /health answers 200 while the models load; "engine": "error" (e.g. a checkpoint that cannot be fetched) is unhealthy
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
    CMD python -c "import json, os, sys, urllib.request as u; \
r = u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '9090'), timeout=8); \
sys.exit(0 if r.status == 200 and json.load(r).get('engine') != 'error' else 1)"

CMD ["gunicorn", "-c", "python:labelstudio_backend.gunicorn_conf", "labelstudio_backend.wsgi:app"]
