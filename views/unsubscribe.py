"""Unsubscribe: the link in every announcement (List-Unsubscribe, RFC 2369 and RFC 8058).

No login: the signed token in the URL is the credential, for one user and one topic. A GET
only shows a page with an Unsubscribe button, since mail scanners fetch every link; a POST
turns the topic off, whether it comes from that button or from a mail provider's one-click
(RFC 8058 §3.2: a POST with List-Unsubscribe=One-Click, no cookies, no CSRF token; hence
exempt from CSRF)."""
from flask import Blueprint, abort, current_app, make_response, render_template, request

import announcements
from views import csrf, limiter

bp = Blueprint('unsubscribe', __name__)
NOT_VALID = ('This unsubscribe link is not valid: it may have been cut short or changed. '
             'Use the link in the email as it is, or turn emails off in Settings → '
             'Notifications.')


def _failures_limit():
    return current_app.config['UNSUBSCRIBE_FAILURES_PER_IP']


# Only refused tokens count towards the limit: a mail provider may one-click for many of its
# users from one address, while guessing at tokens from one is soon stopped.
limited = limiter.shared_limit(_failures_limit, scope='unsubscribe',
                               deduct_when=lambda response: response.status_code >= 400)


def _page(status=200, **context):
    """The card, kept out of caches (its URL holds the token)."""
    response = make_response(render_template('unsubscribe/page.html', **context), status)
    response.headers['Cache-Control'] = 'no-store'
    return response


def _subscription(token):
    """(the user, the topic) the token was made for; else a 404 page."""
    found = announcements.subscription(token)
    if found is None:
        response = make_response(render_template('error.html', title='Link not valid',
                                                 message=NOT_VALID), 404)
        response.headers['Cache-Control'] = 'no-store'
        abort(response)
    return found


@bp.get('/unsubscribe/<token>')
@limited
def page(token):
    """Ask before unsubscribing: show the topic and an Unsubscribe button."""
    user, topic = _subscription(token)
    label = announcements.TOPICS[topic]
    if announcements.subscribed(user, topic):
        return _page(token=token, topic=label, subscribed=True)
    return _page(topic=label, messages=[f'You are not subscribed to {label} emails: there is '
                                        'nothing to stop.'])


@bp.post('/unsubscribe/<token>')
@csrf.exempt
@limited
def unsubscribe(token):
    """Turn the token's topic off for its user (the button, or a one-click POST)."""
    user, topic = _subscription(token)
    announcements.unsubscribe(user, topic, request.remote_addr)
    label = announcements.TOPICS[topic]
    return _page(topic=label, done=True, messages=[
        f'You will get no more {label} emails from Penstock. System emails about your '
        "account's security still reach you."])
