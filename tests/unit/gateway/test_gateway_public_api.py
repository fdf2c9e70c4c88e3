import coordinator.gateway as gateway
import coordinator.gateway.errors as errors


def test_public_api_is_pinned():
    assert sorted(gateway.__all__) == ["GatewayServer", "GatewaySettings", "create_app", "serve_gateway"]
    assert all(issubclass(getattr(errors, n), errors.GatewayError)
               for n in errors.__all__ if n[0].isupper())


def test_every_error_has_an_http_status_and_the_openai_shape():
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type):
            body = cls("boom", param="p").body()["error"]
            assert 400 <= cls.status < 600 and set(body) == {"message", "type", "param", "code"}
