# The job a Sidekiq server runs in tests/apps.rs: it records its argument in the set
# `apps:done`, through the same Redis (rampart) Sidekiq itself uses (REDIS_URL). With REDIS_CA
# (a `rediss://` URL), the server's certificate is verified against that CA file.
require "sidekiq"

if ENV["REDIS_CA"]
  redis = { url: ENV.fetch("REDIS_URL"), ssl_params: { ca_file: ENV["REDIS_CA"] } }
  Sidekiq.configure_server { |config| config.redis = redis }
  Sidekiq.configure_client { |config| config.redis = redis }
end

class CountJob
  include Sidekiq::Worker

  def perform(id)
    Sidekiq.redis { |r| r.sadd("apps:done", id.to_s) }
  end
end
