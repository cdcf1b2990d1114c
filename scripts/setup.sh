#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmarks need on a fresh
# Debian machine (as root): system packages, kernel header links for bcc, and
# the project venv. Safe to run again: it skips what is already there.
set -euo pipefail
VENV="${1:-.venv}"
PKGS=(redis-server bird2 python3-bpfcc bpftool linux-headers-amd64 iproute2 iptables
      nftables iputils-ping netcat-openbsd kmod
      # the image (make image, tests/image): built from Debian packages, no registry;
      # containerd: tests/image imports the archive into a private containerd
      mmdebstrap buildah skopeo containerd)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing system packages (${missing[*]}); run as root to install them" >&2
  else
    echo "setup: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# kubectl with kustomize 5 built in: the manifest tests render every kustomization
# with it and fail without it. These machines' image carries one; elsewhere it comes
# from the Kubernetes project's apt repository (Debian's kubernetes-client is 1.20,
# whose kustomize is too old for these manifests).
KUBECTL_MINOR=v1.32
kustomize_ok() {
  kubectl version --client -o json 2>/dev/null | grep -Eq '"kustomizeVersion": "v([5-9]|[1-9][0-9])\.'
}
if ! kustomize_ok; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: kubectl 1.27+ (kustomize 5) missing; run as root to install it" >&2
  else
    echo "setup: installing kubectl $KUBECTL_MINOR from the Kubernetes apt repository"
    key=/etc/apt/keyrings/kubernetes-apt-keyring.asc
    repo="https://pkgs.k8s.io/core:/stable:/$KUBECTL_MINOR/deb/"
    install -d -m 0755 /etc/apt/keyrings
    if curl -fsSL --max-time 60 "${repo}Release.key" -o "$key.tmp"; then
      mv "$key.tmp" "$key"
      echo "deb [signed-by=$key] $repo /" > /etc/apt/sources.list.d/kubernetes.list
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null
    else
      rm -f "$key.tmp"
      echo "setup: cannot reach the Kubernetes apt repository: install kubectl 1.27 or" \
           "later by hand (the manifest tests fail without kustomize 5)" >&2
    fi
  fi
fi

# bcc compiles against kernel headers. There are none for the running kernel on
# these machines; Debian's headers compile networking programs fine.
kbuild="/lib/modules/$(uname -r)"
if [[ $(id -u) -eq 0 && ! -e "$kbuild/build/Makefile" ]]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1 || true)
  if [[ -n "$hdr" ]]; then
    common="${hdr%-amd64}-common"
    mkdir -p "$kbuild"
    ln -sfn "$hdr" "$kbuild/build"
    ln -sfn "$common" "$kbuild/source"
    echo "setup: linked $hdr as the kernel build tree"
  fi
fi
# bpffs for pinned maps
if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi

PYTHON="${PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# The run-time dependencies at the versions the image ships (scripts/image/
# requirements.lock, hash-checked), so the suite and the benchmarks measure what is
# deployed; the lock targets CPython 3.11 on x86_64 (the image's), other venvs resolve.
lock=scripts/image/requirements.lock
if "$VENV/bin/python" -c 'import platform, sys; sys.exit(not (sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64"))'; then
  "$VENV/bin/python" -m pip install -q --require-hashes --no-deps -r "$lock"
  constraints=$(mktemp)
  sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\) .*/\1/p' "$lock" > "$constraints"
  "$VENV/bin/python" -m pip install -q -c "$constraints" -e '.[dev]'
  rm -f "$constraints"
else
  echo "setup: $("$VENV/bin/python" -V) is not the image's CPython 3.11/x86_64: dependencies not pinned to $lock" >&2
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
fi

# bcc is Debian's python3-bpfcc (the PyPI package named "bcc" is unrelated):
# expose only that module to the venv.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [[ -d /usr/lib/python3/dist-packages/bcc ]]; then
  ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
fi
echo "setup: venv ready at $VENV"
