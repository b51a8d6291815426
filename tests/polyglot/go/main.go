// Command client is a Go client of the meshmart services over gRPC: the polyglot proof in a
// second language (tests/polyglot/client.py is the first). It uses google.golang.org/grpc and
// the stubs that `buf generate --template buf.gen.go.yaml` writes into ./gen from proto/ and
// the materialized imports, nothing else of the project.
//
//	go run . CONFIG_JSON
//
// CONFIG_JSON: {"identity": "host:port", "catalog": ..., "inventory": ..., "orders": ...,
// "admin": {"email": ..., "password": ...}}. Prints one JSON object with what each step saw;
// tests/polyglot/go.test.ts asserts on it. Any unexpected failure exits 1 with the reason.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	validatepb "meshmart.test/polyglot/gen/buf/validate"
	catalogv1 "meshmart.test/polyglot/gen/meshmart/catalog/v1"
	commonv1 "meshmart.test/polyglot/gen/meshmart/common/v1"
	identityv1 "meshmart.test/polyglot/gen/meshmart/identity/v1"
	inventoryv1 "meshmart.test/polyglot/gen/meshmart/inventory/v1"
	ordersv1 "meshmart.test/polyglot/gen/meshmart/orders/v1"
)

const (
	callTimeout = 10 * time.Second
	// How long an order may take to reach a terminal state while we watch it.
	watchTimeout  = 30 * time.Second
	goodCard      = "4242424242424242"
	declinedCard  = "4000000000000002"
	productName   = "Polyglot gopher mug"
	productCateg  = "polyglot-go"
	orderQuantity = 2
)

var serviceNames = map[string]string{
	"identity":  "meshmart.identity.v1.IdentityService",
	"catalog":   "meshmart.catalog.v1.CatalogService",
	"inventory": "meshmart.inventory.v1.InventoryService",
	"orders":    "meshmart.orders.v1.OrderService",
}

type config struct {
	Identity  string `json:"identity"`
	Catalog   string `json:"catalog"`
	Inventory string `json:"inventory"`
	Orders    string `json:"orders"`
	Admin     struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	} `json:"admin"`
}

type money struct {
	CurrencyCode string `json:"currencyCode"`
	Units        int64  `json:"units"`
	Nanos        int32  `json:"nanos"`
}

type violation struct {
	Field   string `json:"field"`
	Rule    string `json:"rule"`
	RuleID  string `json:"ruleId"`
	Message string `json:"message"`
}

// rpcFailure is an RPC error as the wire carried it: the status, and the google.rpc.Status
// of the grpc-status-details-bin trailer with its details decoded.
type rpcFailure struct {
	Code             string      `json:"code"`
	Message          string      `json:"message"`
	HasStatusDetails bool        `json:"hasStatusDetails"`
	StatusCode       int32       `json:"statusCode"`
	StatusMessage    string      `json:"statusMessage"`
	DetailTypes      []string    `json:"detailTypes"`
	Violations       []violation `json:"violations"`
}

type product struct {
	ID       string `json:"id"`
	Sku      string `json:"sku"`
	Name     string `json:"name"`
	Category string `json:"category,omitempty"`
	Price    *money `json:"price,omitempty"`
}

type item struct {
	ProductID string `json:"productId"`
	Sku       string `json:"sku"`
	Quantity  int32  `json:"quantity"`
	UnitPrice money  `json:"unitPrice"`
	LineTotal money  `json:"lineTotal"`
}

type stock struct {
	OnHand    int64 `json:"onHand"`
	Available int64 `json:"available"`
}

// orderReport is one order followed with WatchOrder until the server ended the stream.
type orderReport struct {
	ID           string `json:"id"`
	UserID       string `json:"userId"`
	PlacedStatus string `json:"placedStatus"`
	// Distinct consecutive statuses: the one PlaceOrder returned, then what WatchOrder sent.
	Statuses     []string `json:"statuses"`
	Messages     int      `json:"messages"`
	StreamEnd    string   `json:"streamEnd"`
	Status       string   `json:"status"`
	CancelCode   string   `json:"cancelCode"`
	CancelReason string   `json:"cancelReason"`
	CardLast4    string   `json:"cardLast4"`
	Total        money    `json:"total"`
	Items        []item   `json:"items"`
	HasPaymentID bool     `json:"hasPaymentId"`
	StockAfter   stock    `json:"stockAfter"`
}

type report struct {
	Runtime struct {
		Go       string `json:"go"`
		Grpc     string `json:"grpc"`
		Protobuf string `json:"protobuf"`
	} `json:"runtime"`
	Health map[string]string `json:"health"`
	Admin  struct {
		ProductID string `json:"productId"`
		Sku       string `json:"sku"`
		OnHand    int64  `json:"onHand"`
	} `json:"admin"`
	Catalog struct {
		Listed []product `json:"listed"`
		Got    product   `json:"got"`
	} `json:"catalog"`
	Validation rpcFailure `json:"validation"`
	Identity   struct {
		Email      string `json:"email"`
		SignedUpID string `json:"signedUpId"`
		MeID       string `json:"meId"`
		MeEmail    string `json:"meEmail"`
		TokenType  string `json:"tokenType"`
		HasToken   bool   `json:"hasToken"`
	} `json:"identity"`
	Unauthenticated rpcFailure  `json:"unauthenticated"`
	BadCard         rpcFailure  `json:"badCard"`
	Order           orderReport `json:"order"`
	Declined        orderReport `json:"declined"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: client CONFIG_JSON")
		os.Exit(2)
	}
	var cfg config
	if err := json.Unmarshal([]byte(os.Args[1]), &cfg); err != nil {
		fail("config", err)
	}
	out, err := run(cfg)
	if err != nil {
		fail("client", err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("output", err)
	}
}

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", step, err)
	os.Exit(1)
}

func run(cfg config) (*report, error) {
	out := &report{Health: map[string]string{}}
	out.Runtime.Go = runtime.Version()
	out.Runtime.Grpc = grpc.Version
	out.Runtime.Protobuf = moduleVersion("google.golang.org/protobuf")

	addresses := map[string]string{
		"identity":  cfg.Identity,
		"catalog":   cfg.Catalog,
		"inventory": cfg.Inventory,
		"orders":    cfg.Orders,
	}
	conns := map[string]*grpc.ClientConn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for name, address := range addresses {
		// WithNoProxy: an https_proxy in the environment must not capture calls to 127.0.0.1.
		c, err := grpc.NewClient(address,
			grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		conns[name] = c
	}

	// grpc.health.v1: the server as a whole ("") and the service by its full name.
	for name, c := range conns {
		health := healthpb.NewHealthClient(c)
		for _, service := range []string{"", serviceNames[name]} {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			reply, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			cancel()
			if err != nil {
				return nil, fmt.Errorf("health %s %q: %w", name, service, err)
			}
			key := name
			if service != "" {
				key += "/" + service
			}
			out.Health[key] = reply.GetStatus().String()
		}
	}

	identity := identityv1.NewIdentityServiceClient(conns["identity"])
	catalog := catalogv1.NewCatalogServiceClient(conns["catalog"])
	inventory := inventoryv1.NewInventoryServiceClient(conns["inventory"])
	orders := ordersv1.NewOrderServiceClient(conns["orders"])
	ctx := context.Background()

	// The admin stocks a product of its own, so the orders below do not depend on demo data.
	adminLogin, err := call(ctx, "", func(ctx context.Context) (*identityv1.LoginResponse, error) {
		return identity.Login(ctx, &identityv1.LoginRequest{
			Email: cfg.Admin.Email, Password: cfg.Admin.Password,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("admin Login: %w", err)
	}
	adminToken := adminLogin.GetAccessToken()
	sku := "GO-" + strings.ToUpper(randomHex(4))
	created, err := call(ctx, adminToken, func(ctx context.Context) (*catalogv1.CreateProductResponse, error) {
		return catalog.CreateProduct(ctx, &catalogv1.CreateProductRequest{
			RequestId:   uuid(),
			Sku:         sku,
			Name:        productName,
			Description: "Created from Go",
			Category:    productCateg,
			Price:       &commonv1.Money{CurrencyCode: "EUR", Units: 12, Nanos: 500_000_000},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("CreateProduct: %w", err)
	}
	productID := created.GetProduct().GetId()
	stocked, err := call(ctx, adminToken, func(ctx context.Context) (*inventoryv1.SetStockResponse, error) {
		return inventory.SetStock(ctx, &inventoryv1.SetStockRequest{ProductId: productID, Sku: sku, OnHand: 5})
	})
	if err != nil {
		return nil, fmt.Errorf("SetStock: %w", err)
	}
	out.Admin.ProductID = productID
	out.Admin.Sku = sku
	out.Admin.OnHand = stocked.GetStock().GetOnHand()

	// Catalog reads, anonymous.
	listed, err := call(ctx, "", func(ctx context.Context) (*catalogv1.ListProductsResponse, error) {
		return catalog.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 20, Category: productCateg})
	})
	if err != nil {
		return nil, fmt.Errorf("ListProducts: %w", err)
	}
	out.Catalog.Listed = []product{}
	for _, p := range listed.GetProducts() {
		out.Catalog.Listed = append(out.Catalog.Listed, product{ID: p.GetId(), Sku: p.GetSku(), Name: p.GetName()})
	}
	got, err := call(ctx, "", func(ctx context.Context) (*catalogv1.GetProductResponse, error) {
		return catalog.GetProduct(ctx, &catalogv1.GetProductRequest{ProductId: productID})
	})
	if err != nil {
		return nil, fmt.Errorf("GetProduct: %w", err)
	}
	p := got.GetProduct()
	price := toMoney(p.GetPrice())
	out.Catalog.Got = product{
		ID: p.GetId(), Sku: p.GetSku(), Name: p.GetName(), Category: p.GetCategory(), Price: &price,
	}

	// A validation error: INVALID_ARGUMENT with buf.validate.Violations in google.rpc.Status.
	out.Validation = expectError(ctx, "", func(ctx context.Context, opts ...grpc.CallOption) error {
		_, err := catalog.GetProduct(ctx, &catalogv1.GetProductRequest{ProductId: "not-a-uuid"}, opts...)
		return err
	})

	// A customer signs up and logs in.
	email := "go-" + randomHex(6) + "@example.com"
	const password = "correct horse battery staple"
	signedUp, err := call(ctx, "", func(ctx context.Context) (*identityv1.SignUpResponse, error) {
		return identity.SignUp(ctx, &identityv1.SignUpRequest{Email: email, Password: password, DisplayName: "Go Client"})
	})
	if err != nil {
		return nil, fmt.Errorf("SignUp: %w", err)
	}
	login, err := call(ctx, "", func(ctx context.Context) (*identityv1.LoginResponse, error) {
		return identity.Login(ctx, &identityv1.LoginRequest{Email: email, Password: password})
	})
	if err != nil {
		return nil, fmt.Errorf("Login: %w", err)
	}
	token := login.GetAccessToken()
	me, err := call(ctx, token, func(ctx context.Context) (*identityv1.GetMeResponse, error) {
		return identity.GetMe(ctx, &identityv1.GetMeRequest{})
	})
	if err != nil {
		return nil, fmt.Errorf("GetMe: %w", err)
	}
	out.Identity.Email = email
	out.Identity.SignedUpID = signedUp.GetUser().GetId()
	out.Identity.MeID = me.GetUser().GetId()
	out.Identity.MeEmail = me.GetUser().GetEmail()
	out.Identity.TokenType = login.GetTokenType()
	out.Identity.HasToken = token != ""

	place := func(ctx context.Context, card string, quantity int32, opts ...grpc.CallOption) (*ordersv1.Order, error) {
		r, err := orders.PlaceOrder(ctx, &ordersv1.PlaceOrderRequest{
			RequestId: uuid(),
			Items:     []*ordersv1.OrderItemInput{{ProductId: productID, Quantity: quantity}},
			Payment: &ordersv1.PaymentInput{Card: &commonv1.Card{
				Number: card, ExpMonth: 12, ExpYear: 2030, Cvc: "123", HolderName: "Go Client",
			}},
		}, opts...)
		return r.GetOrder(), err
	}

	// No token: UNAUTHENTICATED. A malformed card: violations with a nested field path.
	out.Unauthenticated = expectError(ctx, "", func(ctx context.Context, opts ...grpc.CallOption) error {
		_, err := orders.ListOrders(ctx, &ordersv1.ListOrdersRequest{}, opts...)
		return err
	})
	out.BadCard = expectError(ctx, token, func(ctx context.Context, opts ...grpc.CallOption) error {
		_, err := place(ctx, "42", 1, opts...)
		return err
	})

	// A good card ends CONFIRMED; a declined one CANCELLED, with its stock given back.
	follow := func(card string, quantity int32) (orderReport, error) {
		placed, err := call(ctx, token, func(ctx context.Context) (*ordersv1.Order, error) {
			return place(ctx, card, quantity)
		})
		if err != nil {
			return orderReport{}, fmt.Errorf("PlaceOrder: %w", err)
		}
		r, err := watch(ctx, orders, token, placed)
		if err != nil {
			return r, err
		}
		left, err := call(ctx, "", func(ctx context.Context) (*inventoryv1.GetStockResponse, error) {
			return inventory.GetStock(ctx, &inventoryv1.GetStockRequest{
				Key: &inventoryv1.GetStockRequest_ProductId{ProductId: productID},
			})
		})
		if err != nil {
			return r, fmt.Errorf("GetStock: %w", err)
		}
		r.StockAfter = stock{OnHand: left.GetStock().GetOnHand(), Available: left.GetStock().GetAvailable()}
		return r, nil
	}
	if out.Order, err = follow(goodCard, orderQuantity); err != nil {
		return nil, fmt.Errorf("good order: %w", err)
	}
	if out.Declined, err = follow(declinedCard, 1); err != nil {
		return nil, fmt.Errorf("declined order: %w", err)
	}
	return out, nil
}

// watch follows an order with the server stream until the server ends it, which WatchOrder
// does after sending a terminal state.
func watch(ctx context.Context, orders ordersv1.OrderServiceClient, token string, placed *ordersv1.Order) (orderReport, error) {
	r := orderReport{
		ID:           placed.GetId(),
		PlacedStatus: placed.GetStatus().String(),
		Statuses:     []string{placed.GetStatus().String()},
	}
	ctx, cancel := context.WithTimeout(withToken(ctx, token), watchTimeout)
	defer cancel()
	stream, err := orders.WatchOrder(ctx, &ordersv1.WatchOrderRequest{OrderId: placed.GetId()})
	if err != nil {
		return r, fmt.Errorf("WatchOrder: %w", err)
	}
	last := placed
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			r.StreamEnd = "EOF"
			break
		}
		if err != nil {
			r.StreamEnd = codeName(status.Code(err))
			break
		}
		r.Messages++
		last = msg.GetOrder()
		if s := last.GetStatus().String(); r.Statuses[len(r.Statuses)-1] != s {
			r.Statuses = append(r.Statuses, s)
		}
	}
	r.UserID = last.GetUserId()
	r.Status = last.GetStatus().String()
	r.CancelCode = last.GetCancelCode().String()
	r.CancelReason = last.GetCancelReason()
	r.CardLast4 = last.GetCardLast4()
	r.Total = toMoney(last.GetTotal())
	r.HasPaymentID = last.GetPaymentId() != ""
	r.Items = []item{}
	for _, i := range last.GetItems() {
		r.Items = append(r.Items, item{
			ProductID: i.GetProductId(), Sku: i.GetSku(), Quantity: i.GetQuantity(),
			UnitPrice: toMoney(i.GetUnitPrice()), LineTotal: toMoney(i.GetLineTotal()),
		})
	}
	return r, nil
}

// call runs one unary call with the call timeout and, when token is set, a bearer token.
func call[T any](ctx context.Context, token string, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(withToken(ctx, token), callTimeout)
	defer cancel()
	return f(ctx)
}

// expectError runs a call that must fail and reports its status, reading the raw trailer too
// so the report says whether grpc-status-details-bin was on the wire.
func expectError(ctx context.Context, token string, f func(context.Context, ...grpc.CallOption) error) rpcFailure {
	ctx, cancel := context.WithTimeout(withToken(ctx, token), callTimeout)
	defer cancel()
	var trailer metadata.MD
	err := f(ctx, grpc.Trailer(&trailer))
	if err == nil {
		return rpcFailure{Code: "OK", DetailTypes: []string{}, Violations: []violation{}}
	}
	st := status.Convert(err)
	out := rpcFailure{
		Code:             codeName(st.Code()),
		Message:          st.Message(),
		HasStatusDetails: len(trailer.Get("grpc-status-details-bin")) > 0,
		StatusCode:       st.Proto().GetCode(),
		StatusMessage:    st.Proto().GetMessage(),
		DetailTypes:      []string{},
		Violations:       []violation{},
	}
	for _, detail := range st.Proto().GetDetails() {
		out.DetailTypes = append(out.DetailTypes, detail.GetTypeUrl())
		violations := &validatepb.Violations{}
		if !detail.MessageIs(violations) {
			continue
		}
		if err := detail.UnmarshalTo(violations); err != nil {
			out.DetailTypes = append(out.DetailTypes, "undecodable: "+err.Error())
			continue
		}
		for _, v := range violations.GetViolations() {
			out.Violations = append(out.Violations, violation{
				Field: fieldPath(v.GetField()), Rule: fieldPath(v.GetRule()),
				RuleID: v.GetRuleId(), Message: v.GetMessage(),
			})
		}
	}
	return out
}

// fieldPath prints a buf.validate.FieldPath the way protovalidate does (items[0].quantity).
func fieldPath(path *validatepb.FieldPath) string {
	parts := make([]string, 0, len(path.GetElements()))
	for _, el := range path.GetElements() {
		name := el.GetFieldName()
		switch s := el.GetSubscript().(type) {
		case *validatepb.FieldPathElement_Index:
			name += "[" + strconv.FormatUint(s.Index, 10) + "]"
		case *validatepb.FieldPathElement_BoolKey:
			name += "[" + strconv.FormatBool(s.BoolKey) + "]"
		case *validatepb.FieldPathElement_IntKey:
			name += "[" + strconv.FormatInt(s.IntKey, 10) + "]"
		case *validatepb.FieldPathElement_UintKey:
			name += "[" + strconv.FormatUint(s.UintKey, 10) + "]"
		case *validatepb.FieldPathElement_StringKey:
			name += "[" + strconv.Quote(s.StringKey) + "]"
		}
		parts = append(parts, name)
	}
	return strings.Join(parts, ".")
}

// codeName is the canonical status name (INVALID_ARGUMENT), as other languages print it; Go's
// codes.Code prints InvalidArgument.
func codeName[C ~uint32](c C) string {
	return rpccode.Code(int32(c)).String()
}

func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func toMoney(m *commonv1.Money) money {
	return money{CurrencyCode: m.GetCurrencyCode(), Units: m.GetUnits(), Nanos: m.GetNanos()}
}

func moduleVersion(path string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == path {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// uuid is a random (version 4) UUID, what request ids are expected to be.
func uuid() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
