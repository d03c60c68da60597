#!/bin/sh
# Lambda Web Adapter (the layer; AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) starts this once per execution environment
# and forwards each API Gateway request to it over HTTP on $AWS_LWA_PORT, streaming the response back.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT:-$(dirname "$0")}${PYTHONPATH:+:$PYTHONPATH}"
exec python3 "${LAMBDA_TASK_ROOT:-$(dirname "$0")}/app.py"
