"""The settings shell: full page or panel fragment, login, ownership, menus."""
import io

import pytest
from PIL import Image

from tests.helpers import HTMX, csrf_token, html

PAGES = [('profile', 'Profile'), ('notifications', 'Notifications')]


@pytest.mark.parametrize('area,heading', PAGES)
def test_settings_page_is_a_full_page_normally(client, logged_in, area, heading):
    response = client.get(f'/user/alice/settings/{area}')
    assert response.status_code == 200
    assert 'HX-Request' in response.vary
    page = html(response)
    assert page.find('html') and page.find('header', id='topbar')
    assert page.title.get_text() == f'{heading} · Penstock'
    assert page.find(id='panel').find('h2').get_text(strip=True) == heading
    nav = page.find('nav', attrs={'aria-label': 'Settings'})
    current = nav.find(attrs={'aria-current': 'page'})
    assert current.get_text(strip=True) == heading


@pytest.mark.parametrize('area,heading', PAGES)
def test_settings_page_is_only_the_panel_for_htmx(client, logged_in, area, heading):
    response = client.get(f'/user/alice/settings/{area}', headers=HTMX)
    assert response.status_code == 200
    assert 'HX-Request' in response.vary
    fragment = html(response)
    assert fragment.find('html') is None and fragment.find('header') is None
    assert fragment.find('h2', id='panel-heading').get_text(strip=True) == heading
    assert fragment.title.get_text() == f'{heading} · Penstock'
    nav = fragment.find('nav', id='settings-nav')
    assert nav['hx-swap-oob'] == 'true'
    assert nav.find(attrs={'aria-current': 'page'}).get_text(strip=True) == heading


@pytest.mark.parametrize('headers', [{'HX-Request': 'true', 'HX-Boosted': 'true'},
                                     {'HX-Request': 'true', 'HX-History-Restore-Request': 'true'}])
def test_boosted_and_history_restore_requests_get_the_full_page(client, logged_in, headers):
    response = client.get('/user/alice/settings/profile', headers=headers)
    assert html(response).find('header', id='topbar') is not None


@pytest.mark.parametrize('area', [a for a, _ in PAGES])
def test_settings_page_needs_login(client, user, area):
    response = client.get(f'/user/alice/settings/{area}')
    assert response.status_code == 302
    assert response.headers['Location'] == f'/login?next=/user/alice/settings/{area}'


@pytest.mark.parametrize('area', [a for a, _ in PAGES])
def test_settings_fragment_needs_login_and_tells_htmx_to_redirect(client, user, area):
    response = client.get(f'/user/alice/settings/{area}', headers={
        **HTMX, 'HX-Current-URL': f'http://localhost/user/alice/settings/{area}'})
    assert response.status_code == 401
    assert response.headers['HX-Redirect'] == f'/login?next=/user/alice/settings/{area}'
    assert response.get_data() == b''


def test_a_form_posted_by_htmx_after_logout_returns_to_its_page(client, user):
    token = csrf_token(client, '/login')
    response = client.post('/user/alice/settings/profile', data={'csrf_token': token}, headers={
        **HTMX, 'HX-Current-URL': 'http://localhost/user/alice/settings/profile?x=1'})
    assert response.status_code == 401
    assert response.headers['HX-Redirect'] == '/login?next=/user/alice/settings/profile?x%3D1'


@pytest.mark.parametrize('area', [a for a, _ in PAGES])
def test_another_users_settings_are_not_found(client, logged_in, other_user, area):
    assert client.get(f'/user/bob/settings/{area}').status_code == 404
    assert client.get(f'/user/nobody/settings/{area}').status_code == 404


def test_settings_shortcut_leads_to_profile(client, logged_in):
    response = client.get('/settings')
    assert response.status_code == 302
    assert response.headers['Location'] == '/user/alice/settings/profile'


def test_menu_offers_only_pages_that_work_in_spec_order(client, logged_in):
    nav = html(client.get('/user/alice/settings/profile')).find('nav', id='settings-nav')
    links = [(a.get_text(strip=True), a['href'], a['hx-get']) for a in nav.find_all('a')]
    labels = [label for label, _, _ in links]
    assert labels[:2] == ['Profile', 'Notifications']
    spec_order = ['Profile', 'Notifications', 'Tokens', 'Advanced', 'Audit Log']
    assert labels == [label for label in spec_order if label in labels]
    assert nav['hx-target'] == '#panel' and nav['hx-push-url'] == 'true'
    for label, href, hx_get in links:
        assert href == hx_get and href.startswith('/user/alice/settings/')
        page = html(client.get(href))
        assert page.find(id='panel').find('h2').get_text(strip=True) == label
        assert html(client.get(href, headers=HTMX)).find('h2', id='panel-heading')


def test_top_bar_has_account_menu_and_switch_identity(client, logged_in):
    bar = html(client.get('/user/alice/settings/profile')).find('header', id='topbar')
    account = bar.find('summary', attrs={'aria-label': 'Account menu'})
    assert account.find('img', class_='avatar')
    menu = account.find_parent('details')
    assert menu.find('a', string='Settings')['href'] == '/user/alice/settings/profile'
    logout = menu.find('button', string='Log out').find_parent('form')
    assert logout['method'] == 'post' and logout['action'] == '/logout'
    identity = bar.find('summary', attrs={'aria-label': 'Switch identity'}).find_parent('details')
    mine = identity.find('details')
    assert mine.find('summary').get_text(strip=True) == 'alice'
    assert mine.find('a', string='Settings')['href'] == '/user/alice/settings/profile'
    assert bar.find(class_='account-name').get_text(strip=True) == 'alice'


def test_top_bar_shows_the_users_small_avatar(client, logged_in):
    bar = html(client.get('/user/alice/settings/profile')).find('header', id='topbar')
    sources = {img['src'] for img in bar.find_all('img', class_='avatar')}
    assert sources == {f'/avatars/{logged_in.id}/1/96.webp'}
    response = client.get(sources.pop())
    assert response.status_code == 200 and response.content_type == 'image/webp'
    assert Image.open(io.BytesIO(response.get_data())).size == (96, 96)


def test_every_page_carries_the_security_headers(client, logged_in):
    # (static files and avatars follow their own rule: test_security_sweep.py)
    for path in ['/login', '/user/alice/settings/profile']:
        with client.get(path) as response:
            headers = response.headers
        csp = headers['Content-Security-Policy']
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert 'unsafe-inline' not in csp and 'unsafe-eval' not in csp
        assert headers['X-Content-Type-Options'] == 'nosniff'
        assert headers['Referrer-Policy'] == 'same-origin'
    assert client.get('/user/alice/settings/profile').headers['Cache-Control'] == 'no-store'


def test_pages_have_no_inline_scripts_or_styles(app, user):
    from tests.conftest import log_in
    anonymous, client = app.test_client(), app.test_client()
    log_in(client, 'alice')
    for visitor, path in [(anonymous, '/login'), (anonymous, '/signup'),
                          (client, '/user/alice/settings/profile'),
                          (client, '/user/alice/settings/notifications')]:
        response = visitor.get(path)
        assert response.status_code == 200
        page = html(response)
        assert all(script.get('src') for script in page.find_all('script'))
        assert page.find('style') is None and page.find(style=True) is None
        config = page.find('meta', attrs={'name': 'htmx-config'})['content']
        assert '"allowEval": false' in config and '"includeIndicatorStyles": false' in config


def test_an_unknown_page_is_a_readable_404(client, logged_in):
    response = client.get('/no/such/page')
    assert response.status_code == 404
    assert html(response).find('h1').get_text(strip=True) == 'Page not found'
    assert html(client.get('/user/bob/settings/profile')).find('h1').get_text(
        strip=True) == 'Page not found'
