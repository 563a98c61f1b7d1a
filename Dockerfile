# syntax=docker/dockerfile:1
# One image for the web app and every worker. The web, default and llm images stay lean (no
# torch); the GPU worker builds the same file with EXTRAS=ml, which adds a CUDA torch and the
# model libraries:
#   docker build -t fgam-studio .
#   docker build -t fgam-studio-gpu --build-arg EXTRAS=ml .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FGAM_VAR_DIR=/data \
    MEDIA_ROOT=/data/media \
    STATIC_ROOT=/app/staticfiles \
    HF_HOME=/data/hf

# Comma-separated extras of pyproject.toml ("" or "ml"). With ml, torch comes first from the
# PyTorch index named here, so pip does not pick a different build for the other ml packages.
# A CPU-only ml image: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=""
# A requirements file installed after the code, for the groundingdino-py worker image:
#   docker build -t fgam-studio-gdino --build-arg REQUIREMENTS=requirements/groundingdino.txt .
ARG REQUIREMENTS=""
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

WORKDIR /app

# Dependencies first, read from pyproject.toml, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN if [ -n "$EXTRAS" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"; \
    fi \
 && python -c 'import os, tomllib; \
p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in os.environ.get("EXTRAS", "").split(",") if e]; \
print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' \
    > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY manage.py ./
COPY webapp ./webapp
COPY workers ./workers
COPY training ./training
COPY templates ./templates
COPY static ./static
COPY requirements ./requirements
RUN if [ -n "$REQUIREMENTS" ]; then pip install -r "$REQUIREMENTS"; fi
# Editable, so settings' BASE_DIR stays /app, where templates/ and static/ are.
RUN pip install --no-deps -e . \
 && SECRET_KEY=collectstatic-only DEBUG=0 DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --noinput -v0 \
 && rm -f /tmp/build.sqlite3

# Media (when not on S3) and the model cache live on a volume mounted at /data.
RUN useradd --system --uid 1000 --home-dir /app fgam \
 && mkdir -p /data/media /data/hf \
 && chown -R fgam /data
USER fgam

EXPOSE 8000
CMD ["gunicorn", "webapp.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
