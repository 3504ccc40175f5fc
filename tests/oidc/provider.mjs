// A real OpenID Provider for meshcontrol's single sign-on tests: oidc-provider (the
// certified Node.js implementation) on loopback, one confidential client, two people.
//
//   node provider.mjs PORT REDIRECT_URI CLIENT_SECRET
//
// Prints `issuer http://127.0.0.1:PORT` once it listens. The sign-in page is
// oidc-provider's development interaction: any known login name (alice, bob) signs in;
// consent is skipped for this first-party client. `auth_time` is in every ID token.
import Provider from 'oidc-provider';

const [port, redirect, secret] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const people = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['eng'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob', groups: ['sales'] },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'meshcontrol',
    client_secret: secret,
    redirect_uris: [redirect],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  async findAccount(ctx, id) {
    const person = people[id];
    if (!person) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...person }; } };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  // First-party client: grant what it asks without a consent page.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
  ttl: { Session: 3600, Interaction: 600, AuthorizationCode: 60, IdToken: 300, AccessToken: 300, Grant: 3600 },
  cookies: { keys: ['meshcontrol-test-cookie-key'] },
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => console.log(`issuer ${issuer}`));
