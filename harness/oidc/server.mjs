// A real authorization server on loopback for the tests (node-oidc-provider, OpenID certified): dynamic client
// registration, authorization code with PKCE, resource indicators (RFC 8707) and JWT access tokens (RFC 9068)
// for one resource, the MCP server. Sign-in and consent are answered at once for the person the test names
// (`/interaction/<uid>?person=alice`); nothing here mints a token outside the flow.
// Usage: node server.mjs PORT RESOURCE[,RESOURCE…] [ACCESS_TOKEN_SECONDS] [jwt|opaque]
// With `opaque`, access tokens are opaque and read by introspection (client `introspector`).
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const [port, resourceList, ttl = '3600', format = 'jwt'] = process.argv.slice(2);
const resources = resourceList.split(',');
const issuer = `http://127.0.0.1:${port}`;
const scopes = ['kling3:read', 'kling3:generate'];

const provider = new Provider(issuer, {
  clientDefaults: { grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
                    token_endpoint_auth_method: 'none' },
  clients: [{ client_id: 'introspector', client_secret: 'introspector-secret', redirect_uris: [],
              token_endpoint_auth_method: 'client_secret_basic',
              response_types: [], grant_types: [] }],
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resources[0],
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (!resources.includes(indicator)) throw new errors.InvalidTarget();
        return { scope: scopes.join(' '), audience: indicator, accessTokenFormat: format,
                 accessTokenTTL: Number(ttl), jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', ...scopes],
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  ttl: { AccessToken: Number(ttl) },
});

provider.on('server_error', (ctx, error) => console.error('server_error', error));

const callback = provider.callback();
http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  if (!url.pathname.startsWith('/interaction/')) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    const person = url.searchParams.get('person') || 'someone';
    if (details.prompt.name === 'login') {
      return await provider.interactionFinished(req, res, { login: { accountId: person } }, { mergeWithLastSubmission: false });
    }
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;  // what the client asked for and the person grants here
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    for (const [indicator, granted] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, granted.join(' '));
    }
    const grantId = await grant.save();
    return await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  } catch (error) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(String(error));
  }
}).listen(Number(port), '127.0.0.1', () => console.log(`listening ${issuer}`));
