# The one-container trial: both services on SQLite, for a try on one machine.
#   docker build -t ocr-service . && docker run -p 5000:5000 ocr-service
# Then http://localhost:5000. Its data (the SQLite file) lives in /app/data: add
# -v ocr-data:/app/data to keep it. For a service others use, run compose.yaml (MySQL, the
# OCR server unpublished, secrets required) or deploy/k8s; the API's settings (OCR_API_KEYS,
# OCR_RATE_LIMIT, ...) go in with docker run -e. Two stages, as docker/Dockerfile.*.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv --without-pip /opt/venv
WORKDIR /src
# Everything both services need, exactly as locked (lock/runtime.txt; the client, in client/,
# is not installed: it is a distribution of its own).
COPY lock/runtime.txt lock/
RUN pip --python /opt/venv/bin/python install --require-hashes --no-deps -r lock/runtime.txt
# The project as a normal package, only this service's code with the shared one (the
# migrations are in ocr_common). setuptools (from the lock) builds it, then goes.
COPY pyproject.toml README.md ./
COPY ocr_common ./ocr_common
COPY api_server ./api_server
COPY ocr_server ./ocr_server
RUN pip --python /opt/venv/bin/python install --no-deps --no-build-isolation . \
    && pip --python /opt/venv/bin/python uninstall --yes setuptools

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin ocr \
    && mkdir -p /app/data && chown ocr:ocr /app/data
COPY --from=build /opt/venv /opt/venv
COPY docker/trial.sh /usr/local/bin/ocr-trial
WORKDIR /app
USER 10001:10001

# One engine per process and one process per core (see docker/Dockerfile.ocr).
ENV OMP_THREAD_LIMIT=1
# The API on every interface of the container, so that -p reaches it (it says so at start,
# and warns while OCR_API_KEYS is unset); the OCR server on the container's loopback only.
# Any Host header: the trial is reached by whatever name or address the machine has.
ENV OCR_API_BIND=0.0.0.0:5000 \
    OCR_SERVER_BIND=127.0.0.1:5001 \
    OCR_SERVER_URL=http://127.0.0.1:5001 \
    OCR_ALLOWED_HOSTS=* \
    OCR_SHUTDOWN_GRACE_S=10
EXPOSE 5000
VOLUME ["/app/data"]

CMD ["ocr-trial"]
