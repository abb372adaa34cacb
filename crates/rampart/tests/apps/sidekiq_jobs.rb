# The job a Sidekiq server runs in tests/apps.rs: it records its argument in the set
# `apps:done`, through the same Redis (rampart) Sidekiq itself uses (REDIS_URL).
require "sidekiq"

class CountJob
  include Sidekiq::Worker

  def perform(id)
    Sidekiq.redis { |r| r.sadd("apps:done", id.to_s) }
  end
end
