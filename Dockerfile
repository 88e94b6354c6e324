# syntax=docker/dockerfile:1
#
# A static relay binary, built on the build machine's own platform for the
# target's (no emulation), shipped alone in a minimal, non-root image:
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=1.0.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/pulsedive-relay/relay:1.0.0 .
# The Go release is go.mod's toolchain line (a test in deploy/ keeps them
# equal).

# The relay's version, in the binary (internal/relay's version) and in the
# image's labels.
ARG VERSION=1.0.0

FROM --platform=$BUILDPLATFORM golang:1.27.3-bookworm AS build
WORKDIR /src
# The relay's module alone (go.work would add deploy/'s, with its
# Kubernetes dependencies), a static binary, and the Go of this image.
ENV GOWORK=off CGO_ENABLED=0 GOTOOLCHAIN=local
COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION
# go build fetches only the modules ./cmd/relay links (no test or tool
# dependency, as go mod download would), into cache mounts kept between
# builds.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags="-s -w -X github.com/pulsedive-relay/relay/internal/relay.version=${VERSION}" \
      -o /out/relay ./cmd/relay

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
# The commit built, and the SPDX expression of the relay's license, given
# at build time.
ARG REVISION=unknown
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="pulsedive-relay" \
      org.opencontainers.image.description="Threat Response relay module: enriches observables with Pulsedive threat intelligence" \
      org.opencontainers.image.source="https://github.com/pulsedive-relay/relay" \
      org.opencontainers.image.documentation="https://github.com/pulsedive-relay/relay/blob/main/README.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="${LICENSES}"
COPY --from=build /out/relay /relay
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/relay"]
