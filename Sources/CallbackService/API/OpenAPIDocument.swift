/// The OpenAPI description served at `GET /openapi.yaml`: the repository's `openapi.yaml`, compiled in
/// byte for byte by the EmbedRepositoryFiles build-tool plugin, so the service needs no file at run time.
enum OpenAPIDocument {
    static var yaml: String { embeddedServiceFiles.first { $0.name == "openapi.yaml" }!.text }
}
