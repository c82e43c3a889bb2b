// A certified OpenID provider (npm `oidc-provider`) for the browser suite: its development
// login and consent pages accept any login name; `grace` is in the `platform` group (bound to
// deployer in end2end/tidemark.e2e.toml), everyone else has no groups (and so no role).
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT ?? 3190);
const tidemark = process.env.TIDEMARK_URL ?? 'http://127.0.0.1:3100';
const issuer = `http://127.0.0.1:${port}`;
const people = {
  grace: { name: 'Grace Hopper', email: 'grace@example.com', groups: ['platform'] },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'tidemark',
    client_secret: 'tidemark-e2e-secret',
    redirect_uris: [`${tidemark}/auth/oidc/callback`],
    post_logout_redirect_uris: [`${tidemark}/login?signed_out=1`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  // Put the scopes' claims in the ID token (Tidemark reads groups from it).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: ['tidemark-e2e-only'] },
  async findAccount(_ctx, id) {
    const person = people[id] ?? { name: id, groups: [] };
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          name: person.name,
          email: person.email,
          groups: person.groups,
        };
      },
    };
  },
});
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
