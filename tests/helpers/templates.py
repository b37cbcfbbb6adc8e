"""A small templates project the templates CLI tests write to disk: a campaign file, a block, a
Mandrill template that lints clean and one with every mistake the linter names."""

CAMPAIGN_YML = """\
campaign: cart_abandonment
template: cart-abandonment
from_email: hello@shop.example.com
from_name: Example Shop
subject: "{{#if first_name}}{{first_name}}, your{{else}}Your{{/if}} cart misses you"
merge_vars:
  - first_name
  - products
  - cart_total
  - currency
blocks:
  - {region: cart_items, template: cart_items.html.j2}
"""

BLOCK_J2 = """\
<ul class="cart">{% for p in products %}
<li>{{ p.name }}{% if p.quantity %} x{{ p.quantity }}{% endif %}</li>{% endfor %}</ul>
"""

CLEAN = """\
<!doctype html>
<html><body>
<h1>Hi {{#if first_name}}{{title first_name}}{{else}}there{{/if}},</h1>
<div mc:edit="cart_items"><p>Your cart</p></div>
{{#each products}}<b>{{upper name}}</b> {{price}} {{../currency}}{{/each}}
{{#if cart_total}}<p>Total {{cart_total}} {{currency}}</p>{{/if}}
{{#if `cart_total > 100`}}<p>Free shipping!</p>{{elseif `cart_total > 50`}}<p>Almost!</p>{{/if}}
<p><a href="{{unsub 'https://shop.example.com/unsubscribe'}}">Unsubscribe</a></p>
</body></html>
"""

BROKEN = """\
<!doctype html>
<html><body>
<h1>Hi {{fist_name}},</h1>
<div mc:edit="cart_item"><p>Your cart</p></div>
{{#each products}}<b>{{shout nmae}}</b>{{/each}}
<p>Sent to {{email}} - *|FNAME|*</p>
</body></html>
"""
