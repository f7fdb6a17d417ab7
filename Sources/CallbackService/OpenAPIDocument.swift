/// The OpenAPI description served at `GET /openapi.yaml`.
enum OpenAPIDocument {
    static let yaml = """
        openapi: 3.1.0
        info:
          title: ci-callbackd
          version: 0.1.0
        paths: {}
        """
}
