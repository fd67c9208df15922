"""The service layer: every rule and validation, shared by the model API, magics, REST and CLI."""
