// The shop's behaviour: every action a shopper takes becomes the RudderStack e-commerce event a
// real shop would send. The cart lives in localStorage, so it survives page loads.
const analytics = new rudderanalytics.RudderAnalytics();
analytics.load(SHOP.writeKey, SHOP.dataPlaneUrl, {
  getSourceConfig: () => ({source: {id: "storefront", name: "storefront", workspaceId: "local",
                                    enabled: true, config: {}, destinations: []}}),
});

const cart = {
  read() { return JSON.parse(localStorage.getItem("cart") || '{"id": null, "lines": {}}'); },
  write(value) { localStorage.setItem("cart", JSON.stringify(value)); },
  lines() { return Object.values(this.read().lines); },
  total() { return this.lines().reduce((sum, l) => sum + l.price * l.quantity, 0); },
};

// A random UUID (v4). crypto.randomUUID exists only in secure contexts (https, localhost): a shop
// opened over plain http from another machine has getRandomValues alone.
function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function product(p, quantity) {
  const out = {product_id: p.product_id, sku: p.sku, name: p.name, brand: p.brand,
               category: p.category, price: p.price, url: location.origin + "/p/" + p.product_id,
               image_url: new URL(p.image_url, location.origin).href};
  if (quantity !== undefined) out.quantity = quantity;
  return out;
}

function addToCart(p) {
  const value = cart.read();
  value.id = value.id || "cart-" + uuid();
  const line = value.lines[p.product_id] || product(p, 0);
  line.quantity += 1;
  value.lines[p.product_id] = line;
  cart.write(value);
  analytics.track("Product Added", {cart_id: value.id, ...product(p, 1)});
  document.getElementById("cart-count").textContent = cart.lines().length;
}

function identify(form) {
  const email = form.email.value.trim().toLowerCase();
  analytics.identify(email, {email, first_name: form.first_name.value.trim(),
                             email_opt_in: form.email_opt_in.checked});
  document.getElementById("who").textContent = "Signed in as " + email;
  return false;
}

function checkout() {
  const value = cart.read();
  // a stale cart tab after ordering in another: no order of nothing (it would count as a
  // purchase and hold back the shopper's abandonment emails)
  if (cart.lines().length === 0) return;
  const orderId = "o-" + uuid().slice(0, 13);
  const common = {cart_id: value.id, order_id: orderId, currency: SHOP.currency,
                  products: cart.lines(), revenue: cart.total()};
  analytics.track("Checkout Started", {...common, value: cart.total()});
  analytics.track("Order Completed", {...common, total: cart.total()});
  cart.write({id: null, lines: {}});
  document.getElementById("cart-count").textContent = 0;
  document.getElementById("main").innerHTML = "<h1>Thank you</h1><p>Order " + orderId + "</p>";
}

// Time on content (docs/contracts.md, "Page Engaged"), as Snowplow's activity tracking measures
// it: a second counts when the page is visible and the shopper did something (moved, scrolled,
// typed, touched) within the active window. Once a page has the minimum, every heartbeat of
// engaged time is reported, and the rest when the shopper leaves; each page load is one
// page_view_id, so a ping lost or repeated never double-counts a view.
const engagement = {
  config: SHOP.engagement,
  pageViewId: uuid(),
  lastInput: performance.now(),
  engaged: 0,     // seconds counted on this page
  unreported: 0,  // of which not yet sent

  start() {
    for (const kind of ["mousemove", "mousedown", "keydown", "scroll", "touchstart", "wheel"]) {
      addEventListener(kind, () => { this.lastInput = performance.now(); }, {passive: true});
    }
    setInterval(() => this.tick(), 1000);
    addEventListener("pagehide", () => this.report(true));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") this.report(true);
    });
  },
  tick() {
    const idle = (performance.now() - this.lastInput) / 1000;
    if (document.visibilityState !== "visible" || idle > this.config.activeWindowSeconds) return;
    this.engaged += 1;
    this.unreported += 1;
    if (this.unreported >= this.config.heartbeatSeconds) this.report(false);
  },
  report(leaving) {
    if (this.unreported < 1 || this.engaged < this.config.minVisitSeconds) return;
    const seconds = this.unreported;
    this.unreported = 0;
    const props = {page_view_id: this.pageViewId, engaged_seconds: seconds,
                   heartbeat_seconds: this.config.heartbeatSeconds};
    if (SHOP.viewed) Object.assign(props, {product_id: SHOP.viewed.product_id,
                                            name: SHOP.viewed.name,
                                            category: SHOP.viewed.category});
    // on leaving, the SDK keeps the event in its persisted queue if the page closes first
    analytics.track("Page Engaged", props);
  },
};

document.addEventListener("DOMContentLoaded", () => {
  engagement.start();
  document.getElementById("cart-count").textContent = cart.lines().length;
  analytics.page(SHOP.page.category, SHOP.page.name, SHOP.page.properties || {});
  if (SHOP.viewed) analytics.track("Product Viewed", product(SHOP.viewed));
  if (SHOP.searched !== undefined) analytics.track("Products Searched", {query: SHOP.searched});
  if (SHOP.page.name === "Cart") analytics.track("Cart Viewed", {cart_id: cart.read().id,
                                                                  products: cart.lines()});
});
