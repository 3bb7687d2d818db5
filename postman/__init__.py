"""The Postman collection of every neurostream HTTP service, generated from their OpenAPI."""
