"""longrun's local runtime: the whole service on one machine, with no AWS account, no Docker and no network.

moto plays AWS on LocalStack's edge port; this package supplies what moto cannot: the Lambda service (the real
handlers, in-process), SSM Run Command (a simulated device fleet that really runs the scripts), EventBridge's
delivery of SSM's events to the template's rule targets, and API Gateway (real HTTP in front of the API function,
and a real WebSocket server, with its @connections API, in front of the WebSocket API's functions).
Product code never imports it.
"""
