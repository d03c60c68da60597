"""A function API Gateway may not invoke (no Lambda permission) and whose role may not post to connections."""


def handler(event, context):
    return {"statusCode": 200}
