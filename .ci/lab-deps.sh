#!/usr/bin/env bash
# Installs what the gpufleet lab (src/gpufleet/lab) needs on a Debian 12 machine, as root.
# Idempotent and quick when everything is already there: apt is only touched when a tool is missing.
set -euo pipefail

# tool -> Debian package that ships it
declare -A NEED=(
  [debootstrap]=debootstrap
  [systemd-nspawn]=systemd-container
  [ip]=iproute2
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [apt-ftparchive]=apt-utils
  [gpg]=gnupg
  [nsenter]=util-linux
  [unshare]=util-linux
  [mount]=mount
  [curl]=curl
)

missing=()
for tool in "${!NEED[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${NEED[$tool]}")
done
# systemd-container Recommends libnss-mymachines; not needed (see shared/facts/testhosts.md #9).
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "lab-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Other jobs on the machine may hold the dpkg lock: wait for it instead of failing.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  # shellcheck disable=SC2046
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
  echo "lab-deps: installed $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
else
  echo "lab-deps: all present"
fi
