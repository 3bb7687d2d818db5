# syntax=docker/dockerfile:1
# One image for every neurostream part; the command chooses the service, e.g.
#   docker run IMAGE python -m queue_manager     (the default)
#   docker run IMAGE python -m workers
#   docker run IMAGE neurostream --help

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch==2.13.0 must come from the CPU index, https://download.pytorch.org/whl/cpu: the
# default PyPI wheel pulls the multi-GB CUDA stack. Installed first so `pip install .`
# finds the pin satisfied (and so this layer is cached across code changes).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY neurostream ./neurostream
COPY launcher ./launcher
COPY producer ./producer
COPY workers ./workers
COPY queue_manager ./queue_manager
COPY ml_data_api ./ml_data_api
COPY monitoring_api ./monitoring_api
COPY retraining_api ./retraining_api
RUN pip install .

FROM python:3.11-slim
# libgomp: OpenMP runtime used by BrainFlow's DSP and scikit-learn.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 neurostream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER neurostream
WORKDIR /home/neurostream
EXPOSE 8000 8001 8002 8003 9100
CMD ["python", "-m", "queue_manager"]
