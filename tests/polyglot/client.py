"""A Python client of the meshmart services over gRPC: the polyglot proof.

Runs on Debian's python3-grpcio with the *_pb2 / *_pb2_grpc stubs that
tests/polyglot/python.test.ts generates with Debian's python3-grpc-tools from proto/ and the
materialized imports (.proto-deps/), plus two protos the servers speak that are not in our
module: grpc.health.v1 (grpc-health-check's health.proto, what the servers register) and
google.rpc.Status (the grpc-status-details-bin envelope, from google-proto-files).

    /usr/bin/python3 tests/polyglot/client.py GEN_DIR CONFIG_JSON

CONFIG_JSON: {"identity": "host:port", "catalog": ..., "inventory": ..., "orders": ...,
"admin": {"email": ..., "password": ...}}. Prints one JSON object with what each step saw;
the node test asserts on it. Any unexpected failure is a traceback and exit status 1.
"""

import json
import sys
import time
import uuid

sys.path.insert(0, sys.argv[1])

# Generated modules; the path above must come first.
import grpc  # noqa: E402
from buf.validate import validate_pb2  # noqa: E402
from google.rpc import status_pb2  # noqa: E402
from health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from meshmart.catalog.v1 import catalog_service_pb2 as catalog_pb  # noqa: E402
from meshmart.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc  # noqa: E402
from meshmart.common.v1 import card_pb2, money_pb2  # noqa: E402
from meshmart.identity.v1 import identity_service_pb2 as identity_pb  # noqa: E402
from meshmart.identity.v1 import identity_service_pb2_grpc as identity_grpc  # noqa: E402
from meshmart.inventory.v1 import inventory_service_pb2 as inventory_pb  # noqa: E402
from meshmart.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc  # noqa: E402
from meshmart.orders.v1 import orders_pb2  # noqa: E402
from meshmart.orders.v1 import orders_service_pb2 as orders_pb  # noqa: E402
from meshmart.orders.v1 import orders_service_pb2_grpc as orders_grpc  # noqa: E402

TIMEOUT_S = 10
ORDER_SETTLE_S = 30
GOOD_CARD = "4242424242424242"
SERVICE_NAMES = {
    "identity": "meshmart.identity.v1.IdentityService",
    "catalog": "meshmart.catalog.v1.CatalogService",
    "inventory": "meshmart.inventory.v1.InventoryService",
    "orders": "meshmart.orders.v1.OrderService",
}


def channel(target):
    # An http_proxy in the environment must not capture calls to 127.0.0.1.
    return grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])


def bearer(token):
    return (("authorization", "Bearer " + token),)


def money(m):
    return {"currencyCode": m.currency_code, "units": m.units, "nanos": m.nanos}


def field_path(path):
    """A buf.validate.FieldPath as the dotted form protovalidate prints (items[0].quantity)."""
    parts = []
    for el in path.elements:
        name = el.field_name
        which = el.WhichOneof("subscript")
        if which is not None:
            name += "[%s]" % json.dumps(getattr(el, which))
        parts.append(name)
    return ".".join(parts)


def rpc_error(err):
    """An RpcError with its google.rpc.Status trailer decoded: code, message, details."""
    trailers = dict(err.trailing_metadata() or ())
    raw = trailers.get("grpc-status-details-bin")
    out = {
        "code": err.code().name,
        "message": err.details(),
        "hasStatusDetails": raw is not None,
        "detailTypes": [],
        "violations": [],
    }
    if raw is None:
        return out
    status = status_pb2.Status.FromString(raw)
    out["statusCode"] = status.code
    out["statusMessage"] = status.message
    for detail in status.details:
        out["detailTypes"].append(detail.type_url)
        if detail.Is(validate_pb2.Violations.DESCRIPTOR):
            violations = validate_pb2.Violations()
            detail.Unpack(violations)
            for v in violations.violations:
                out["violations"].append(
                    {
                        "field": field_path(v.field),
                        "rule": field_path(v.rule),
                        "ruleId": v.rule_id,
                        "message": v.message,
                    }
                )
    return out


def expect_error(call):
    try:
        call()
    except grpc.RpcError as err:
        return rpc_error(err)
    return {"code": "OK"}


def main():
    config = json.loads(sys.argv[2])
    channels = {name: channel(config[name]) for name in SERVICE_NAMES}
    result = {"runtime": {"grpc": grpc.__version__, "python": sys.version.split()[0]}}

    # grpc.health.v1: the server as a whole ("") and the service by its full name.
    result["health"] = {}
    for name, ch in channels.items():
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", SERVICE_NAMES[name]):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            result["health"][name + ("/" + service if service else "")] = status

    identity = identity_grpc.IdentityServiceStub(channels["identity"])
    catalog = catalog_grpc.CatalogServiceStub(channels["catalog"])
    inventory = inventory_grpc.InventoryServiceStub(channels["inventory"])
    orders = orders_grpc.OrderServiceStub(channels["orders"])

    # The admin stocks a product of its own, so the order below does not depend on demo data.
    admin = identity.Login(
        identity_pb.LoginRequest(
            email=config["admin"]["email"], password=config["admin"]["password"]
        ),
        timeout=TIMEOUT_S,
    )
    sku = "PY-" + uuid.uuid4().hex[:8].upper()
    created = catalog.CreateProduct(
        catalog_pb.CreateProductRequest(
            request_id=str(uuid.uuid4()),
            sku=sku,
            name="Polyglot kettle",
            description="Created from Python",
            category="polyglot",
            price=money_pb2.Money(currency_code="EUR", units=12, nanos=500000000),
        ),
        metadata=bearer(admin.access_token),
        timeout=TIMEOUT_S,
    ).product
    stocked = inventory.SetStock(
        inventory_pb.SetStockRequest(product_id=created.id, sku=sku, on_hand=5),
        metadata=bearer(admin.access_token),
        timeout=TIMEOUT_S,
    ).stock
    result["admin"] = {"productId": created.id, "sku": sku, "onHand": stocked.on_hand}

    # Catalog reads, anonymous.
    listed = catalog.ListProducts(
        catalog_pb.ListProductsRequest(page_size=20, category="polyglot"), timeout=TIMEOUT_S
    )
    got = catalog.GetProduct(
        catalog_pb.GetProductRequest(product_id=created.id), timeout=TIMEOUT_S
    ).product
    result["catalog"] = {
        "listed": [{"id": p.id, "sku": p.sku, "name": p.name} for p in listed.products],
        "got": {
            "id": got.id,
            "sku": got.sku,
            "name": got.name,
            "category": got.category,
            "price": money(got.price),
        },
    }

    # Validation errors: INVALID_ARGUMENT with buf.validate.Violations inside google.rpc.Status.
    result["validation"] = expect_error(
        lambda: catalog.GetProduct(
            catalog_pb.GetProductRequest(product_id="not-a-uuid"), timeout=TIMEOUT_S
        )
    )

    # A customer signs up and logs in.
    email = "py-%s@example.com" % uuid.uuid4().hex[:12]
    password = "correct horse battery staple"
    signed_up = identity.SignUp(
        identity_pb.SignUpRequest(email=email, password=password, display_name="Py Client"),
        timeout=TIMEOUT_S,
    ).user
    login = identity.Login(
        identity_pb.LoginRequest(email=email, password=password), timeout=TIMEOUT_S
    )
    me = identity.GetMe(
        identity_pb.GetMeRequest(), metadata=bearer(login.access_token), timeout=TIMEOUT_S
    ).user
    result["identity"] = {
        "email": email,
        "signedUpId": signed_up.id,
        "meId": me.id,
        "meEmail": me.email,
        "tokenType": login.token_type,
        "hasToken": len(login.access_token) > 0,
    }
    token = login.access_token

    def place(card_number, request_id):
        return orders.PlaceOrder(
            orders_pb.PlaceOrderRequest(
                request_id=request_id,
                items=[orders_pb.OrderItemInput(product_id=created.id, quantity=2)],
                payment=orders_pb.PaymentInput(
                    card=card_pb2.Card(
                        number=card_number,
                        exp_month=12,
                        exp_year=2030,
                        cvc="123",
                        holder_name="Py Client",
                    )
                ),
            ),
            metadata=bearer(token),
            timeout=TIMEOUT_S,
        ).order

    # No token: UNAUTHENTICATED. A malformed card: violations with a nested field path.
    result["unauthenticated"] = expect_error(
        lambda: orders.ListOrders(orders_pb.ListOrdersRequest(), timeout=TIMEOUT_S)
    )
    result["badCard"] = expect_error(lambda: place("42", str(uuid.uuid4())))

    # The full order: PENDING at once, then the saga runs; poll until it is terminal.
    placed = place(GOOD_CARD, str(uuid.uuid4()))
    seen = [orders_pb2.OrderStatus.Name(placed.status)]
    deadline = time.monotonic() + ORDER_SETTLE_S
    order = placed
    while order.status == orders_pb2.ORDER_STATUS_PENDING and time.monotonic() < deadline:
        time.sleep(0.2)
        order = orders.GetOrder(
            orders_pb.GetOrderRequest(order_id=placed.id),
            metadata=bearer(token),
            timeout=TIMEOUT_S,
        ).order
        name = orders_pb2.OrderStatus.Name(order.status)
        if seen[-1] != name:
            seen.append(name)
    stock = inventory.GetStock(
        inventory_pb.GetStockRequest(product_id=created.id), timeout=TIMEOUT_S
    ).stock
    result["order"] = {
        "id": placed.id,
        "userId": order.user_id,
        "placedStatus": seen[0],
        "statuses": seen,
        "status": orders_pb2.OrderStatus.Name(order.status),
        "cancelCode": orders_pb2.CancelCode.Name(order.cancel_code),
        "cancelReason": order.cancel_reason,
        "cardLast4": order.card_last4,
        "total": money(order.total),
        "items": [
            {
                "productId": i.product_id,
                "sku": i.sku,
                "quantity": i.quantity,
                "unitPrice": money(i.unit_price),
                "lineTotal": money(i.line_total),
            }
            for i in order.items
        ],
        "hasPaymentId": len(order.payment_id) > 0,
        "stockAfter": {"onHand": stock.on_hand, "available": stock.available},
    }

    for ch in channels.values():
        ch.close()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
