"""The typed vocabulary of every value that reaches a host: names, addresses, paths, versions.

Each type is a pydantic `Annotated` type (strict: a YAML `true` is no port, `5` is no user
name) whose validator says, in one sentence, which characters it allows. The inventory schema
(gpufleet.inventory) and the deploy settings (gpufleet.settings) are built from these, so a
value either has the declared shape or stops the load with its file:line.

Checks use `re.fullmatch` with explicit ASCII classes: `$` would let a trailing newline through
and `\\d`/`\\w` would let Unicode digits and letters through.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt, StrictStr

from gpufleet.vllm.models import check_model_id, check_revision


def shown(value: object, limit: int = 60) -> str:
    """repr() of a value, shortened: safe to print (escapes newlines and control characters)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rule(pattern: str, what: str, max_len: int) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not value:
            raise ValueError(f"must not be empty: {what}")
        if not compiled.fullmatch(value):
            raise ValueError(f"not {what}")
        if len(value) > max_len:
            raise ValueError(f"longer than {max_len} characters: {what}")
        return value

    return check


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"

check_label = _rule(_LABEL, "a name of lower-case letters, digits and '-' (an RFC 1123 label: "
                    "not starting or ending with '-', at most 63 characters)", 63)
check_posix_name = _rule(r"[A-Za-z_][A-Za-z0-9_]*", "a POSIX name: letters, digits and '_', not "
                         "starting with a digit", 128)
check_unix_name = _rule(r"[a-z_][a-z0-9_-]*[$]?", "a user or group name as useradd allows: "
                        "lower-case letters, digits, '_' and '-', starting with a letter or '_' "
                        "(at most 32 characters)", 32)
check_rocm_version = _rule(r"[0-9]{1,4}(\.[0-9]{1,4}){0,3}", "a ROCm version: dotted numbers "
                           "such as 6.4.1", 19)
check_vllm_version = _rule(
    r"[0-9]{1,6}(\.[0-9]{1,6}){0,3}((a|b|rc)[0-9]{1,4})?(\.post[0-9]{1,4})?(\.dev[0-9]{1,6})?"
    r"(\+[a-z0-9]{1,16}(\.[a-z0-9]{1,16}){0,3})?",
    "a vLLM version: dotted numbers such as 0.19.1 (optionally rc1, .post1, .dev1, +local)", 48)
check_package = _rule(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?", "a Debian package name "
                      "(lower-case letters, digits, '+', '-', '.'; optionally =VERSION)", 128)


def check_host_name(value: str) -> str:
    """An RFC 1123 host name (labels of letters, digits, '-', joined by '.') or an IP literal."""
    if not value:
        raise ValueError("must not be empty: a host name or IP address")
    if len(value) > 253:
        raise ValueError("longer than 253 characters: not a host name")
    try:
        return check_ip(value)
    except ValueError:
        pass
    if not all(re.fullmatch(_HOST_LABEL, label) for label in value.split(".")):
        raise ValueError("not a host name (RFC 1123: letters, digits and '-' in labels joined by "
                         "'.', each not starting or ending with '-') nor an IP address")
    return value


_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def check_group_name(value: str) -> str:
    """A host group (`--limit GROUP`): letters, digits, '-' and '_', starting with a letter or
    digit, at most 63 characters (no glob or pattern characters: `--limit` parses those)."""
    if not _GROUP.fullmatch(value):
        raise ValueError("not a group name (letters, digits, '-' and '_', starting with a "
                         "letter or digit, at most 63 characters)")
    return value


def check_ip(value: str) -> str:
    """An IPv4 or IPv6 literal, without a zone (`%eth0`) or brackets."""
    if "%" in value or not re.fullmatch(r"[0-9A-Fa-f.:]+", value or "-"):
        raise ValueError("not an IP address such as 127.0.0.1, 0.0.0.0, ::1 or ::")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("not an IP address such as 127.0.0.1, 0.0.0.0, ::1 or ::") from None
    return value


def check_host_port(value: str) -> str:
    """`host` or `host:port` (pip's --trusted-host)."""
    host, sep, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    check_host_name(host)
    if sep and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError("not HOST or HOST:PORT with a port 1-65535")
    return value


_PATH_CHARS = re.compile(r"[A-Za-z0-9_./-]+")


def check_host_path(value: str) -> str:
    """An absolute, normalised path on a host, of letters, digits and / . _ - only (what a unit
    file, a ReadWritePaths= list and a shell command can hold unquoted)."""
    if not value.startswith("/"):
        raise ValueError("not an absolute path (it must start with '/')")
    if len(value) > 1024:
        raise ValueError("longer than 1024 characters: not a path")
    if not _PATH_CHARS.fullmatch(value):
        raise ValueError("not a plain path: use letters, digits and / . _ - only (no spaces, "
                         "quotes, '%', '$' or control characters)")
    if ".." in value.split("/") or posixpath.normpath(value) != value:
        raise ValueError("not a normalised path (no '..', '.', '//' or trailing '/')")
    return value


def check_local_dir(value: str) -> str:
    """A folder on the controller, absolute or relative to the inventory file: normalised, no
    '..', no whitespace or control characters."""
    if not value or len(value) > 1024:
        raise ValueError("not a folder path (1-1024 characters)")
    if re.search(r"[\x00-\x20\x7f]", value):
        raise ValueError("a path without whitespace or control characters is needed")
    if ".." in value.split("/") or posixpath.normpath(value) != value:
        raise ValueError("not a normalised path (no '..', '.', '//' or trailing '/')")
    return value


def check_controller_file(value: str) -> str:
    """A file on the controller (`~` allowed): no control characters, not an option."""
    if not value or len(value) > 4096:
        raise ValueError("not a file path (1-4096 characters)")
    if re.search(r"[\x00-\x1f\x7f\u0085\u2028\u2029]", value):
        raise ValueError("a file path must not contain control characters or line breaks")
    if value.startswith("-"):
        raise ValueError("a file path must not start with '-' (it would read as an option)")
    return value


def check_url_path(value: str) -> str:
    """A URL path such as /health: '/' then letters, digits and / . _ - ~, normalised."""
    if len(value) > 256:
        raise ValueError("longer than 256 characters: not a URL path")
    if not value.startswith("/") or not re.fullmatch(r"/[A-Za-z0-9_.~/-]*", value):
        raise ValueError("not a plain URL path: '/' followed by letters, digits and / . _ - ~ "
                         "(no query, spaces, '%' or control characters)")
    if any(part in (".", "..") for part in value.split("/")) or "//" in value:
        raise ValueError("not a normalised URL path (no '.', '..' or '//')")
    return value


_URL = re.compile(r"(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
                  r"(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?")


def check_http_url(value: str) -> str:
    """An http(s) URL with a host, without whitespace, control characters, user info, query or
    fragment (they become apt and pip configuration lines)."""
    if len(value) > 2048:
        raise ValueError("longer than 2048 characters: not a URL")
    match = _URL.fullmatch(value)
    if not match:
        raise ValueError("not an http(s) URL such as https://mirror.example/rocm/apt (no spaces, "
                         "quotes, control characters, query or fragment)")
    host = match.group(2)
    if host.startswith("["):
        check_ip(host[1:-1])
    else:
        check_host_name(host)
    if match.group(3) and not 1 <= int(match.group(3)[1:]) <= 65535:
        raise ValueError("the URL's port must be 1-65535")
    return value


_REQUIREMENT = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._,-]+\])?"
    r"((==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!_-]*(\{(version|rocm_variant)\}[A-Za-z0-9.*+!_-]*)*"
    r"(,(==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!_-]+)*)?"
)


def check_requirement(value: str) -> str:
    """A pip requirement `name[extras]==version` (comparisons joined by ','), no spaces or URLs;
    `{version}` (the fleet's vllm_version) and `{rocm_variant}` (its ROCm wheel build, e.g.
    rocm700) are the only placeholders."""
    if len(value) > 256 or not _REQUIREMENT.fullmatch(value):
        raise ValueError("not a pip requirement such as vllm=={version} or huggingface-hub==0.34.4 "
                         "(name, optional [extras], comparisons; no spaces, URLs or other {...})")
    return value


URL_PLACEHOLDERS = ("{version}", "{rocm_variant}")


def check_url_template(value: str) -> str:
    """An http(s) URL (check_http_url) in which `{version}` and `{rocm_variant}` may stand for
    the fleet's vLLM release and its ROCm wheel build."""
    filled = value
    for placeholder in URL_PLACEHOLDERS:
        filled = filled.replace(placeholder, "x")
    if "{" in filled or "}" in filled:
        raise ValueError("only {version} and {rocm_variant} may be filled into this URL")
    check_http_url(filled)
    return value


# docker/distribution reference grammar (registry/name:tag@digest), ASCII only.
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?)"  # noqa: E501
_COMPONENT = r"(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)"
_IMAGE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?"
)


def image_parts(value: str) -> tuple[str | None, str | None]:
    """(tag, digest) of a valid image reference."""
    match = _IMAGE.fullmatch(value)
    if match is None:
        raise ValueError("not an image reference")
    return match.group("tag"), match.group("digest")


def check_image(value: str) -> str:
    """An image reference `[registry/]name[:tag][@digest]` (lower-case name components)."""
    if not value or len(value) > 512 or not _IMAGE.fullmatch(value):
        raise ValueError("not an image reference [registry[:port]/]name[:tag][@sha256:digest] "
                         "(lower-case name, no spaces or control characters)")
    return value


def check_arg_word(value: str) -> str:
    """One word of a command line: anything printable, no control characters (NUL, newline)."""
    if len(value) > 4096:
        raise ValueError("longer than 4096 characters: not one argument")
    if (found := re.search(r"[\x00-\x1f\x7f]", value)) is not None:
        raise ValueError(f"contains the control character {found.group(0)!r}: each word is one "
                         "argument on one line")
    return value


def check_env_value(value: str) -> str:
    """An env value: free text on one line (no NUL, newline or carriage return)."""
    if len(value) > 32768:
        raise ValueError("longer than 32768 characters: not an environment value")
    for char, name in (("\x00", "a NUL byte"), ("\n", "a newline"), ("\r", "a carriage return")):
        if char in value:
            raise ValueError(f"contains {name}: an env file holds one line per variable")
    return value


Label = Annotated[StrictStr, AfterValidator(check_label)]
HostName = Annotated[StrictStr, AfterValidator(check_host_name)]
GroupName = Annotated[StrictStr, AfterValidator(check_group_name)]
IpLiteral = Annotated[StrictStr, AfterValidator(check_ip)]
HostPort = Annotated[StrictStr, AfterValidator(check_host_port)]
PosixName = Annotated[StrictStr, AfterValidator(check_posix_name)]
UnixName = Annotated[StrictStr, AfterValidator(check_unix_name)]
HostPath = Annotated[StrictStr, AfterValidator(check_host_path)]
LocalDir = Annotated[StrictStr, AfterValidator(check_local_dir)]
ControllerFile = Annotated[StrictStr, AfterValidator(check_controller_file)]
UrlPath = Annotated[StrictStr, AfterValidator(check_url_path)]
HttpUrl = Annotated[StrictStr, AfterValidator(check_http_url)]
UrlTemplate = Annotated[StrictStr, AfterValidator(check_url_template)]
Requirement = Annotated[StrictStr, AfterValidator(check_requirement)]
ImageRef = Annotated[StrictStr, AfterValidator(check_image)]
RocmVersion = Annotated[StrictStr, AfterValidator(check_rocm_version)]
VllmVersion = Annotated[StrictStr, AfterValidator(check_vllm_version)]
ModelId = Annotated[StrictStr, AfterValidator(check_model_id)]
Revision = Annotated[StrictStr, AfterValidator(check_revision)]
Package = Annotated[StrictStr, AfterValidator(check_package)]
ArgWord = Annotated[StrictStr, AfterValidator(check_arg_word)]
EnvValue = Annotated[StrictStr, AfterValidator(check_env_value)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
