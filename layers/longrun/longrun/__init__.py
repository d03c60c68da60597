"""longrun's shared package: models, domain logic and data access for the task API and its workflow."""
