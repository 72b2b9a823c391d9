# medclip-ad in a container: `medclip-ad infer` by default, any subcommand on request.
# Two targets, the same package and constraints.txt (the exact tested set):
#   cpu:  torch's CPU build from PyTorch's CPU index (no CUDA wheels, a much smaller image)
#   cuda: torch from PyPI, which brings its CUDA runtime wheels (the host needs the NVIDIA driver and
#         container toolkit: docker run --gpus all ...)
#   deploy: the cuda image plus the MONAI Deploy application (python -m medclip_ad.deploy), study in /input,
#         models (settings.yaml, weights, checkpoint) in /models, DICOM outputs in /output
# Build and run: see README.md ("Containers"). Not built in CI.

FROM python:3.11-slim AS common
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MEDCLIP_AD_CACHE=/cache
RUN useradd --create-home --uid 1000 medclip \
    && mkdir -p /cache /data /results && chown medclip:medclip /cache /results
WORKDIR /opt/medclip-ad
COPY pyproject.toml README.md LICENSE CHANGELOG.md constraints.txt ./
COPY medclip_ad ./medclip_ad
COPY app ./app
COPY bundles ./bundles

FROM common AS cpu
RUN pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu \
    && pip install ".[viewer]" -c constraints.txt \
    && pip check
USER medclip
VOLUME ["/cache", "/results"]
ENTRYPOINT ["medclip-ad"]
CMD ["infer", "/data", "--out", "/results", "--device", "cpu"]

FROM common AS cuda
RUN pip install ".[viewer]" -c constraints.txt \
    && pip check
USER medclip
VOLUME ["/cache", "/results"]
ENTRYPOINT ["medclip-ad"]
CMD ["infer", "/data", "--out", "/results", "--device", "cuda"]

FROM cuda AS deploy
USER root
RUN pip install ".[deploy]" -c constraints.txt \
    && pip check \
    && mkdir -p /input /output /models && chown medclip:medclip /output
USER medclip
ENV HOLOSCAN_INPUT_PATH=/input HOLOSCAN_OUTPUT_PATH=/output HOLOSCAN_MODEL_PATH=/models
VOLUME ["/output"]
ENTRYPOINT ["python", "-m", "medclip_ad.deploy"]
CMD []
