"""template.yaml as the local runtime deploys it: the same resources, with local names and ARNs.

Only what the local stack needs is resolved: Ref, Fn::GetAtt and Fn::Sub over parameters (their defaults),
pseudo parameters and the resources the template declares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACCOUNT_ID = "123456789012"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !GetAtt, !Sub ...) read as their long forms."""


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _short_tag)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """API Gateway resource path, e.g. /device-management/script-execution/{task_id}"""
    function: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method.upper() != self.method:
            return None
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        found = re.match(pattern, path)
        return found.groupdict() if found else None


@dataclass(frozen=True)
class EventRule:
    function: str
    pattern: dict[str, Any]


@dataclass(frozen=True)
class Function:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]


@dataclass
class LocalStack:
    """The template's resources, named for one local deployment."""

    root: Path
    stack_name: str
    region: str
    resources: dict[str, dict[str, Any]]
    parameters: dict[str, str]
    functions: dict[str, Function] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    event_rules: list[EventRule] = field(default_factory=list)
    stage: str = "v1"

    # --- what the runtime creates ------------------------------------------------------------

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: res for name, res in self.resources.items() if res["Type"] == kind}

    def tables(self) -> list[dict[str, Any]]:
        tables = []
        for logical_id, resource in self.of_type("AWS::DynamoDB::Table").items():
            props = self.resolve(resource["Properties"])
            keep = (
                "AttributeDefinitions",
                "KeySchema",
                "GlobalSecondaryIndexes",
                "LocalSecondaryIndexes",
                "BillingMode",
            )
            tables.append({"TableName": self.physical_id(logical_id)} | {k: props[k] for k in keep if k in props})
        return tables

    def buckets(self) -> list[str]:
        return [self.physical_id(logical_id) for logical_id in self.of_type("AWS::S3::Bucket")]

    def state_machines(self) -> list[tuple[str, str]]:
        """(name, definition) of each state machine: its ASL file with DefinitionSubstitutions applied."""
        machines = []
        for logical_id, resource in self.of_type("AWS::Serverless::StateMachine").items():
            props = resource["Properties"]
            definition = (self.root / props["DefinitionUri"]).read_text()
            for key, value in self.resolve(props.get("DefinitionSubstitutions", {})).items():
                definition = definition.replace("${" + key + "}", str(value))
            machines.append((self.physical_id(logical_id), definition))
        return machines

    # --- names -------------------------------------------------------------------------------

    def physical_id(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            return f"{self.stack_name}-{logical_id}".lower()
        if kind == "AWS::Serverless::StateMachine" and "Name" in props:
            return str(self.resolve(props["Name"]))
        return f"{self.stack_name}-{logical_id}"

    def arn(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = self.physical_id(logical_id)
        prefix = f"arn:aws:{{}}:{self.region}:{ACCOUNT_ID}"
        return {
            "AWS::Serverless::Function": prefix.format("lambda") + f":function:{name}",
            "AWS::Serverless::StateMachine": prefix.format("states") + f":stateMachine:{name}",
            "AWS::DynamoDB::Table": prefix.format("dynamodb") + f":table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
        }.get(kind, prefix.format("local") + f":{logical_id}")

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        kind = self.resources[name]["Type"]
        if kind in ("AWS::Serverless::StateMachine", "AWS::Serverless::LayerVersion", "AWS::IAM::ManagedPolicy"):
            return self.arn(name)
        return self.physical_id(name)

    def get_att(self, name: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(name)
        if attribute == "Name":
            return self.physical_id(name)
        raise ValueError(f"the local runtime does not resolve !GetAtt {name}.{attribute}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            name, attribute = value["Fn::GetAtt"]
            return self.get_att(name, attribute)
        if set(value) == {"Fn::Sub"}:
            return self._sub(value["Fn::Sub"])
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}]+)\}", replace, text)


def load(root: Path, stack_name: str, region: str) -> LocalStack:
    document = yaml.load((root / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506 - safe loader subclass
    parameters = {name: str(spec.get("Default", "")) for name, spec in document.get("Parameters", {}).items()}
    stack = LocalStack(
        root=root, stack_name=stack_name, region=region, resources=document["Resources"], parameters=parameters
    )
    globals_ = document.get("Globals", {}).get("Function", {})
    for logical_id, resource in stack.of_type("AWS::Serverless::Function").items():
        props = {**globals_, **resource["Properties"]}
        environment = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **resource["Properties"].get("Environment", {}).get("Variables", {}),
        }
        stack.functions[logical_id] = Function(
            logical_id=logical_id,
            name=stack.physical_id(logical_id),
            arn=stack.arn(logical_id),
            code_dir=root / props["CodeUri"],
            handler=props["Handler"],
            timeout=int(props.get("Timeout", 3)),
            memory=int(props.get("MemorySize", 128)),
            environment={key: str(value) for key, value in stack.resolve(environment).items()},
        )
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "Api":
                spec = event["Properties"]
                stack.routes.append(Route(method=spec["Method"].upper(), path=spec["Path"], function=logical_id))
            elif event["Type"] == "EventBridgeRule":
                stack.event_rules.append(EventRule(function=logical_id, pattern=event["Properties"]["Pattern"]))
    for api in stack.of_type("AWS::Serverless::Api").values():
        stack.stage = str(api["Properties"].get("StageName", stack.stage))
    return stack
