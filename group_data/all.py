"""gpufleet deploy settings: every knob, its default, and why (geerlingguy-style defaults).

pyinfra reads this file as the `all` group's data; the @deploy functions in
src/gpufleet/deploys/ also load it as their `data_defaults`, so the defaults hold in API runs
and from any working directory. Override a knob per site in the inventory's host data,
`pyinfra ... --data gpufleet_x=...`, `gpufleet deploy --set gpufleet_x=...`, or for the
inventories/*.py files a YAML file named by the GPUFLEET_SETTINGS environment variable.
The fleet itself (ROCm and vLLM versions, runtime, image, model cache) comes from the
inventory YAML, never from here.
"""

# ---------------------------------------------------------------- rocm: repositories

# Base of AMD's ROCm apt repositories; `/<rocm_version> <codename> main` is appended.
# Air-gapped sites and the test lab point this (and the two below) at their mirror.
gpufleet_rocm_repo_url = "https://repo.radeon.com/rocm/apt"
# Base of AMD's kernel driver repositories; `/<amdgpu_version>/ubuntu <codename> main` is appended.
gpufleet_amdgpu_repo_url = "https://repo.radeon.com/amdgpu"
# Base of the ROCm 7.x "graphics" repository; `/<rocm_version>/ubuntu <codename> main` is appended.
gpufleet_graphics_repo_url = "https://repo.radeon.com/graphics"
# AMD's signing key (armored); installed dearmored into gpufleet_rocm_keyring.
gpufleet_rocm_key_url = "https://repo.radeon.com/rocm/rocm.gpg.key"
gpufleet_rocm_keyring = "/etc/apt/keyrings/rocm.gpg"
# Driver repository version. None: the ROCm version (6.x releases them in lockstep).
# ROCm 7.x versions the driver separately and needs it set, e.g. "30.10.1" for ROCm 7.0.1.
gpufleet_amdgpu_version = None
# Priority of packages from repo.radeon.com over the distribution's own (AMD's recipe: 600).
gpufleet_rocm_pin_priority = 600

# ---------------------------------------------------------------- rocm: packages

# Installed first when missing: what fetching and dearmoring the key needs.
gpufleet_rocm_prerequisite_packages = ["ca-certificates", "curl", "gnupg"]
# ROCm userspace. Hosts that run vLLM in containers need only the SMI tools; use ["rocm"]
# for the whole stack (venv runtime). The lab's mirror serves Debian's "rocm-smi".
gpufleet_rocm_packages = ["rocm-smi-lib", "amd-smi-lib", "rocminfo"]
# Kernel parts: headers for the running kernel, amdgpu-dkms, reboot when needed. False for
# containers and the lab (no kernel to build for); the skip is printed on every run.
gpufleet_rocm_install_driver = True
gpufleet_rocm_driver_packages = ["amdgpu-dkms"]
# Reboot when amdgpu-dkms was just installed and the module is not live. False: warn only.
gpufleet_rocm_reboot = True
gpufleet_rocm_reboot_timeout = 900
# After installing, rocm-smi must list the inventory's gpu_count GPUs (its exit code says
# nothing: rocm-smi exits 0 without a driver).
gpufleet_rocm_verify_gpus = True
# Groups that may open /dev/kfd and /dev/dri/renderD*.
gpufleet_gpu_groups = ["render", "video"]

# ---------------------------------------------------------------- tuning (AMD's MI300X guide)

# Kernel command line: IOMMU pass-through, via /etc/default/grub.d + update-grub. Takes effect
# at the next boot (the deploy warns, it does not reboot for this).
gpufleet_tuning_iommu_pt = True
gpufleet_tuning_grub_dropin = "/etc/default/grub.d/90-gpufleet.cfg"
# kernel.numa_balancing=0 now and at boot (sysctl.d). Containers may deny the write: the
# deploy then warns and goes on.
gpufleet_tuning_numa_balancing_off = True
gpufleet_tuning_sysctl_file = "/etc/sysctl.d/90-gpufleet.conf"

# ---------------------------------------------------------------- runtime

# The account every vLLM unit runs as; a system user in gpufleet_gpu_groups.
gpufleet_service_user = "gpufleet"
gpufleet_service_home = "/var/lib/gpufleet"
# venv runtime: where vLLM is installed, and from where.
gpufleet_venv_dir = "/opt/gpufleet/venv"
gpufleet_pip_index_url = "https://pypi.org/simple"
# Extra indexes for every venv (an internal mirror); the vLLM venv adds its own below.
gpufleet_pip_extra_index_urls = []
# vLLM's ROCm wheels (PyPI's wheel is the CUDA build, which does not run on MI300X):
# {rocm_variant} is the build the release's installation page names (rocm700, rocm721,
# rocm100: gpufleet/vllm/data/releases), {version} the fleet's vllm_version. Python 3.12 only.
gpufleet_vllm_extra_index_urls = ["https://wheels.vllm.ai/rocm/{version}/{rocm_variant}"]
# Plain-HTTP index hosts pip may use (an air-gapped mirror, the test lab); empty = HTTPS only.
gpufleet_pip_trusted_hosts = []
# The requirement installed; {version} is the fleet's vllm_version. ROCm wheels carry a local
# version ("0.19.1+rocm700"): without it pip would take PyPI's CUDA wheel of the same version.
gpufleet_vllm_requirement = "vllm=={version}+{rocm_variant}"
# venv runtime, docling services: docling-serve in a venv of its own (its torch is not vLLM's).
gpufleet_docling_venv_dir = "/opt/gpufleet/docling"
gpufleet_docling_requirement = "docling-serve"
# container runtime: engine packages from the distribution (docker.io or podman).
gpufleet_container_packages = {"docker": ["docker.io"], "podman": ["podman"]}

# ---------------------------------------------------------------- weights

# Pre-download every model at its pinned revision into the fleet's model cache (HF hub
# layout). False where the hosts cannot reach the hub (the lab): units then rely on
# what is already in the cache.
gpufleet_weights_download = True
# A small venv with huggingface_hub, separate from vLLM's so the container runtime has it too.
gpufleet_weights_venv_dir = "/opt/gpufleet/hub"
gpufleet_weights_requirement = "huggingface-hub"  # a pin must use ==, as pip freeze prints it
# Root-only directory for the download tokens and helper (never on a command line).
gpufleet_weights_state_dir = "/etc/gpufleet/weights"

# ---------------------------------------------------------------- the pyinfra CLI path

# Steps deploys/site.py runs (`--data gpufleet_steps=rocm,services`); `gpufleet deploy` has --steps.
gpufleet_steps = ["rocm", "tuning", "runtime", "weights", "services"]

# Extra paths the sandboxed (ProtectSystem=strict) venv units may write, besides the model
# cache. Empty on real hosts; the test lab adds its emulated GPU state (/run/fakegpu).
gpufleet_unit_read_write_paths = []
