"""The SSM documents the local fleet can run, as AWS publishes them, and the validation SSM applies to their
parameters on SendCommand.

AWS-RunRemoteScript (schema 2.2) has three steps: ``downloadContent`` fetches the script, ``runPowerShellScript``
runs on Windows only, ``runShellScript`` on Linux. Its ``executionTimeout`` allows 1 to 28,800 seconds (8 hours).
A multi-step document's invocation is read step by step: GetCommandInvocation needs the step's name as
``PluginName``. Each step writes its output under ``<prefix>/<command>/<node>/<action>/<step>/stdout|stderr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_EXECUTION_TIMEOUT = 28_800


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str
    """String or StringMap"""
    default: str | None = None
    """None: required"""
    allowed_values: tuple[str, ...] = ()
    allowed_pattern: str | None = None
    max_chars: int | None = None


@dataclass(frozen=True)
class Step:
    action: str
    name: str
    platform: str | None
    """The platformType precondition, if any"""
    run_command: tuple[str, ...] = ()

    @property
    def output_folder(self) -> str:
        """Where a 2.2 document's step writes its output, under the node's prefix."""
        return f"{self.action.replace(':', '')}/{self.name}"

    def skip_message(self) -> str:
        return (
            f"Step execution skipped due to unsatisfied preconditions: "
            f"'\"StringEquals\": [platformType, {self.platform}]'. Step name: {self.name}"
        )


@dataclass(frozen=True)
class Document:
    name: str
    parameters: tuple[Parameter, ...]
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step | None:
        return next((step for step in self.steps if step.name == name), None)

    def validate(self, given: dict[str, list[str]]) -> str | None:
        """Why SSM would refuse these parameters (InvalidParameters), or None."""
        known = {parameter.name: parameter for parameter in self.parameters}
        unknown = sorted(set(given) - set(known))
        if unknown:
            return f"document {self.name} does not support parameters: {', '.join(unknown)}"
        for parameter in self.parameters:
            values = given.get(parameter.name)
            if values is None:
                if parameter.default is None:
                    return f"document {self.name} requires parameter {parameter.name}"
                continue
            if len(values) != 1:
                return f"parameter {parameter.name} takes one value"
            value = values[0]
            if parameter.allowed_values and value not in parameter.allowed_values:
                return f"parameter {parameter.name} must be one of {', '.join(parameter.allowed_values)}"
            if parameter.allowed_pattern and not re.fullmatch(parameter.allowed_pattern, value):
                return f"parameter {parameter.name} value {value!r} does not match {parameter.allowed_pattern}"
            if parameter.max_chars is not None and len(value) > parameter.max_chars:
                return f"parameter {parameter.name} is longer than {parameter.max_chars} characters"
        return None

    def value(self, given: dict[str, list[str]], name: str) -> str:
        parameter = next(p for p in self.parameters if p.name == name)
        return given[name][0] if name in given else str(parameter.default)


RUN_REMOTE_SCRIPT = Document(
    name="AWS-RunRemoteScript",
    parameters=(
        Parameter("sourceType", "String", allowed_values=("GitHub", "S3")),
        Parameter("sourceInfo", "StringMap"),
        Parameter("commandLine", "String"),
        Parameter("workingDirectory", "String", default="", max_chars=4096),
        Parameter(
            "executionTimeout",
            "String",
            default="3600",
            allowed_pattern=r"([1-9][0-9]{0,3})|(1[0-9]{1,4})|(2[0-7][0-9]{1,3})|(28[0-7][0-9]{1,2})|(28800)",
        ),
    ),
    steps=(
        Step("aws:downloadContent", "downloadContent", None),
        Step("aws:runPowerShellScript", "runPowerShellScript", "Windows"),
        Step(
            "aws:runShellScript",
            "runShellScript",
            "Linux",
            ("", "directory=$(pwd)", "export PATH=$PATH:$directory", " {{ commandLine }} ", ""),
        ),
    ),
)

DOCUMENTS = {RUN_REMOTE_SCRIPT.name: RUN_REMOTE_SCRIPT}
