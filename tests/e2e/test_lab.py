"""The lab itself, end to end: real hosts over real ssh, its apt mirror and PyPI index, pyinfra
against it, link cuts, host rebuilds, and a `down` that leaves nothing behind."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from tests_e2e_helpers import ssh  # noqa: F401  (placeholder, replaced below)
