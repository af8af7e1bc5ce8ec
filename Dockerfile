# deltaprop on an NVIDIA GPU: `docker build -t deltaprop .` then
#   docker run --gpus all -v deltaprop-data:/home/deltaprop/.cache/deltaprop deltaprop
# trains MNIST (the default command); `docker run --gpus all deltaprop info` lists the backends.
FROM nvidia/cuda:12.8.0-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/deltaprop \
    PATH=/opt/deltaprop/bin:$PATH

# Ubuntu's python3 (3.12); apt package versions follow the pinned base image's archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY deltaprop ./deltaprop
# the project itself, from this source tree, with its CUDA 12 extra
# hadolint ignore=DL3013
RUN pip install ".[cuda12]"

# The numba-cuda kernels of the reference net, compiled without a GPU for the A100 (8.0) and the H100/H200
# (9.0), so that a container starts warm; another net or GPU compiles what it lacks at its first fit, into the
# same folder (writable by the container's user).
ENV DELTAPROP_KERNEL_CACHE=/opt/deltaprop-kernels
RUN deltaprop compile --cc 8.0 && deltaprop compile --cc 9.0

# uid 1000 is the image's "ubuntu" user; deltaprop gets its own
RUN groupadd --gid 10001 deltaprop \
    && useradd --create-home --uid 10001 --gid 10001 deltaprop \
    && mkdir -p /home/deltaprop/.cache/deltaprop \
    && chown -R deltaprop:deltaprop /home/deltaprop/.cache "$DELTAPROP_KERNEL_CACHE"
USER 10001:10001
WORKDIR /home/deltaprop
# the MNIST cache (and any data the user mounts there); DELTAPROP_DATA can point elsewhere
VOLUME ["/home/deltaprop/.cache/deltaprop"]

ENTRYPOINT ["deltaprop"]
CMD ["train"]
