"""The HTTP face of the backend: the Flask app factory and its Blueprints (the ML-backend protocol, webhooks,
training and status routes), request hooks (body bounds, auth, errors) and bounded admission."""
