"""template.yaml as CloudFormation would deploy it, named for one local deployment.

The SAM template goes through the SAM translator (the library ``sam deploy`` and CloudFormation's
``AWS::Serverless`` transform use), so the local runtime sees what AWS would create: the functions' generated
roles with SAM's policy templates expanded, the REST API's OpenAPI body with its gateway responses, the EventBridge
rules and their Lambda permissions, the state machine with its role. The translator is the one SAM CLI installs in
its own environment (.venv-sam, as SAM CLI pins pydantic and boto3), so it runs there, in a process of its own; its
output is cached by the template's content. Local code paths stand in for the artifacts ``sam deploy`` would upload.
Intrinsic functions are resolved with the parameters' defaults (or the values given), local names and ARNs under
one account.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCOUNT_ID = "123456789012"
CODE_BUCKET = "local-code"
"""Where SAM would have uploaded each code folder; its keys are the folders' paths in this repository."""
SAM_PYTHON = "LONGRUN_SAM_PYTHON"
"""Names the Python of SAM CLI's environment (by default .venv-sam/bin/python in the repository)"""
_TRANSFORM = """
import json, logging, sys
import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

logging.getLogger("samtranslator").setLevel(logging.ERROR)
request = json.load(sys.stdin)
document = yaml_parse(request["template"])
for resource in document["Resources"].values():
    props = resource.get("Properties", {})
    for name in ("CodeUri", "ContentUri", "DefinitionUri"):  # local folders stand in for uploaded artifacts
        if isinstance(props.get(name), str) and not props[name].startswith("s3://"):
            props[name] = "s3://" + request["codeBucket"] + "/" + props[name]
defaults = {name: str(spec.get("Default", "")) for name, spec in document.get("Parameters", {}).items()}
parameters = {**defaults, **request["parameters"]}
translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=request["region"]))
# The translator asks IAM for managed policy ARNs only when a template names one by bare name; ours do not.
deployed = translator.translate(document, parameter_values=dict(parameters), get_managed_policy_map=dict)
json.dump({"template": deployed, "parameters": parameters}, sys.stdout)
"""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """API Gateway resource path, e.g. /device-management/script-execution/{task_id}"""
    function: str
    credentials: str | None
    """The integration's credentials: None (the function's resource-based permission) or arn:aws:iam::*:user/*
    (the caller's own credentials invoke the function)"""

    def match(self, path: str) -> dict[str, str] | None:
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        found = re.match(pattern, path)
        return found.groupdict() if found else None


@dataclass(frozen=True)
class GatewayResponse:
    status: int | None
    """The response's own status code; None keeps the error's status"""
    headers: dict[str, str]
    templates: dict[str, str]


@dataclass(frozen=True)
class RestApi:
    logical_id: str
    id: str
    stage: str
    routes: list[Route]
    gateway_responses: dict[str, GatewayResponse]


@dataclass(frozen=True)
class EventRule:
    logical_id: str
    arn: str
    pattern: dict[str, Any]
    targets: list[str]
    """The functions (logical ids) it invokes"""


@dataclass(frozen=True)
class Function:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    role: str
    """The ARN of its execution role"""


@dataclass(frozen=True)
class Role:
    logical_id: str
    name: str
    arn: str
    policies: dict[str, dict[str, Any]]
    """policy name (inline) or ARN (managed) -> policy document; AWS managed policies are left to the caller"""


@dataclass(frozen=True)
class LambdaPermission:
    function: str
    principal: str
    source_arn: str | None


@dataclass
class LocalStack:
    """The deployed template's resources, named for one local deployment."""

    root: Path
    stack_name: str
    region: str
    resources: dict[str, dict[str, Any]]
    parameters: dict[str, str]
    outputs: dict[str, Any] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    managed_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """ARN -> document of each AWS::IAM::ManagedPolicy the template creates"""
    apis: list[RestApi] = field(default_factory=list)
    event_rules: list[EventRule] = field(default_factory=list)
    permissions: list[LambdaPermission] = field(default_factory=list)

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

    def buckets(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, properties) of each bucket."""
        return [
            (self.physical_id(logical_id), self.resolve(resource.get("Properties", {})))
            for logical_id, resource in self.of_type("AWS::S3::Bucket").items()
        ]

    def state_machines(self) -> list[tuple[str, str, str]]:
        """(name, definition, role ARN) of each state machine: its ASL file with DefinitionSubstitutions applied."""
        machines = []
        for logical_id, resource in self.of_type("AWS::StepFunctions::StateMachine").items():
            props = self.resolve(resource["Properties"])
            definition = (self.root / props["DefinitionS3Location"]["Key"]).read_text()
            for key, value in props.get("DefinitionSubstitutions", {}).items():
                definition = definition.replace("${" + key + "}", str(value))
            machines.append((self.physical_id(logical_id), definition, props["RoleArn"]))
        return machines

    def output(self, name: str) -> str:
        return str(self.resolve(self.outputs[name]["Value"]))

    # --- names -------------------------------------------------------------------------------

    def physical_id(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            return f"{self.stack_name}-{logical_id}".lower()
        if kind == "AWS::StepFunctions::StateMachine" and "StateMachineName" in props:
            return str(self.resolve(props["StateMachineName"]))
        if kind == "AWS::ApiGateway::RestApi":
            return hashlib.sha256(f"{self.stack_name}/{logical_id}".encode()).hexdigest()[:10]
        return f"{self.stack_name}-{logical_id}"

    def arn(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = self.physical_id(logical_id)
        prefix = f"arn:aws:{{}}:{self.region}:{ACCOUNT_ID}"
        return {
            "AWS::Lambda::Function": prefix.format("lambda") + f":function:{name}",
            "AWS::Lambda::LayerVersion": prefix.format("lambda") + f":layer:{name}:1",
            "AWS::StepFunctions::StateMachine": prefix.format("states") + f":stateMachine:{name}",
            "AWS::DynamoDB::Table": prefix.format("dynamodb") + f":table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}",
            "AWS::IAM::ManagedPolicy": f"arn:aws:iam::{ACCOUNT_ID}:policy/{name}",
            "AWS::Events::Rule": prefix.format("events") + f":rule/{name}",
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
        if kind in ("AWS::StepFunctions::StateMachine", "AWS::Lambda::LayerVersion", "AWS::IAM::ManagedPolicy"):
            return self.arn(name)
        return self.physical_id(name)

    def get_att(self, name: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(name)
        if attribute == "Name":
            return self.physical_id(name)
        if attribute == "RootResourceId":
            return f"{self.physical_id(name)}-root"
        raise ValueError(f"the local runtime does not resolve !GetAtt {name}.{attribute}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            name, attribute = target.split(".", 1) if isinstance(target, str) else target
            return self.get_att(name, attribute)
        if set(value) == {"Fn::Sub"}:
            spec = value["Fn::Sub"]
            if isinstance(spec, list):
                text, variables = spec
                return self._sub(text, {key: str(self.resolve(item)) for key, item in variables.items()})
            return self._sub(spec, {})
        if set(value) == {"Fn::Join"}:
            separator, items = value["Fn::Join"]
            return separator.join(str(item) for item in self.resolve(items))
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub(self, text: str, variables: dict[str, str]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return variables[name]
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)


def load(
    root: Path,
    stack_name: str,
    region: str,
    parameters: dict[str, str] | None = None,
    template_file: Path | None = None,
) -> LocalStack:
    """The template (root/template.yaml unless ``template_file``) as CloudFormation would deploy it after the SAM
    transform, under ``stack_name``; code paths are relative to ``root``."""
    text = (template_file or root / "template.yaml").read_text()
    deployed, values = _sam_transform(root, text, parameters or {}, region)
    stack = LocalStack(
        root=root,
        stack_name=stack_name,
        region=region,
        resources=deployed["Resources"],
        parameters=values,
        outputs=deployed.get("Outputs", {}),
    )
    for logical_id, resource in stack.of_type("AWS::Lambda::Function").items():
        stack.functions[logical_id] = _function(stack, logical_id, resource["Properties"])
    for logical_id, resource in stack.of_type("AWS::IAM::ManagedPolicy").items():
        stack.managed_policies[stack.arn(logical_id)] = stack.resolve(resource["Properties"]["PolicyDocument"])
    for logical_id, resource in stack.of_type("AWS::IAM::Role").items():
        stack.roles[logical_id] = _role(stack, logical_id, resource["Properties"])
    for logical_id, resource in stack.of_type("AWS::ApiGateway::RestApi").items():
        stack.apis.append(_rest_api(stack, logical_id, resource["Properties"]))
    functions_by_arn = {function.arn: function.logical_id for function in stack.functions.values()}
    for logical_id, resource in stack.of_type("AWS::Events::Rule").items():
        props = stack.resolve(resource["Properties"])
        targets = [functions_by_arn[t["Arn"]] for t in props.get("Targets", []) if t["Arn"] in functions_by_arn]
        stack.event_rules.append(EventRule(logical_id, stack.arn(logical_id), props["EventPattern"], targets))
    functions_by_name = {function.name: function.logical_id for function in stack.functions.values()}
    for resource in stack.of_type("AWS::Lambda::Permission").values():
        props = stack.resolve(resource["Properties"])
        function = functions_by_name.get(props["FunctionName"]) or functions_by_arn.get(props["FunctionName"])
        if function is not None:
            stack.permissions.append(LambdaPermission(function, props["Principal"], props.get("SourceArn")))
    return stack


def _sam_transform(
    root: Path, template: str, parameters: dict[str, str], region: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the CloudFormation template SAM makes of ``template``, every parameter's value), from the cache or from the
    SAM translator in SAM CLI's environment."""
    python = os.environ.get(SAM_PYTHON) or str(root / ".venv-sam" / "bin" / "python")
    request = {"template": template, "parameters": parameters, "region": region, "codeBucket": CODE_BUCKET}
    key = hashlib.sha256(json.dumps([request, python, _TRANSFORM], sort_keys=True).encode()).hexdigest()[:32]
    cached = root / ".local-runtime" / "cache" / f"sam-transform-{key}.json"
    if not cached.exists():
        if not Path(python).exists():
            raise RuntimeError(
                f"no SAM CLI environment at {python}: run `make .venv-sam/.installed`, or set {SAM_PYTHON}"
            )
        done = subprocess.run(
            [python, "-c", _TRANSFORM], input=json.dumps(request), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the SAM transform failed:\n{done.stderr}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        partial.write_text(done.stdout)
        partial.replace(cached)
    result = json.loads(cached.read_text())
    return result["template"], result["parameters"]


def _function(stack: LocalStack, logical_id: str, props: dict[str, Any]) -> Function:
    layer_dirs = []
    for layer in stack.resolve(props.get("Layers", [])):
        layer_id = next(name for name in stack.of_type("AWS::Lambda::LayerVersion") if stack.arn(name) == layer)
        layer_dirs.append(stack.root / stack.resources[layer_id]["Properties"]["Content"]["S3Key"])
    environment = stack.resolve(props.get("Environment", {}).get("Variables", {}))
    return Function(
        logical_id=logical_id,
        name=stack.physical_id(logical_id),
        arn=stack.arn(logical_id),
        code_dir=stack.root / props["Code"]["S3Key"],
        layer_dirs=tuple(layer_dirs),
        handler=props["Handler"],
        timeout=int(props.get("Timeout", 3)),
        memory=int(props.get("MemorySize", 128)),
        environment={key: str(value) for key, value in environment.items()},
        role=stack.resolve(props["Role"]),
    )


def _role(stack: LocalStack, logical_id: str, props: dict[str, Any]) -> Role:
    props = stack.resolve(props)
    policies = {policy["PolicyName"]: policy["PolicyDocument"] for policy in props.get("Policies", [])}
    for arn in props.get("ManagedPolicyArns", []):
        policies[arn] = stack.managed_policies.get(arn, {})
    return Role(
        logical_id=logical_id,
        name=stack.physical_id(logical_id),
        arn=stack.arn(logical_id),
        policies=policies,
    )


def _rest_api(stack: LocalStack, logical_id: str, props: dict[str, Any]) -> RestApi:
    body = stack.resolve(props["Body"])
    functions_by_arn = {function.arn: function.logical_id for function in stack.functions.values()}
    routes = []
    for path, methods in body.get("paths", {}).items():
        for method, spec in methods.items():
            integration = spec["x-amazon-apigateway-integration"]
            function_arn = integration["uri"].split("/functions/", 1)[1].removesuffix("/invocations")
            routes.append(Route(method.upper(), path, functions_by_arn[function_arn], integration.get("credentials")))
    responses = {}
    for kind, spec in body.get("x-amazon-apigateway-gateway-responses", {}).items():
        headers = {
            name.removeprefix("gatewayresponse.header."): value.strip("'")
            for name, value in spec.get("responseParameters", {}).items()
        }
        status = spec.get("statusCode")
        responses[kind] = GatewayResponse(int(status) if status else None, headers, spec.get("responseTemplates", {}))
    stages = [
        res["Properties"]["StageName"]
        for res in stack.of_type("AWS::ApiGateway::Stage").values()
        if res["Properties"]["RestApiId"] == {"Ref": logical_id}
    ]
    return RestApi(logical_id, stack.physical_id(logical_id), stages[0], routes, responses)
