# Real Sidekiq processes and the library's own count of a queue's work, waiting and in progress.
#
# As a job file of the `sidekiq` command (it configures Redis from the environment):
#   SIDEKIQ_PORT=PORT SIDEKIQ_NAMESPACE=NS sidekiq -r ./sidekiq_work.rb -q QUEUE -c N
# As a script:
#   ruby sidekiq_work.rb PORT NAMESPACE push QUEUE COUNT RELEASE_KEY
#     pushes COUNT HoldJobs; each runs until the key RELEASE_KEY exists (at most 60 s)
#   ruby sidekiq_work.rb PORT NAMESPACE count QUEUE
#     prints {"waiting": Sidekiq::Queue#size, "running": the Sidekiq::WorkSet entries of QUEUE}
# An empty NAMESPACE means none; a namespace goes through redis-namespace, as Sidekiq 6 does it.
require "json"
require "redis"
require "sidekiq"
require "sidekiq/api"

# redis-rb 4.8 warns about calls Sidekiq 6.4 makes; they are not what this file tests.
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

def redis_options(port, namespace)
  options = { url: "redis://127.0.0.1:#{port}/0" }
  options[:namespace] = namespace unless namespace.to_s.empty?
  options
end

# Holds a worker thread until the test releases it: in progress for as long as the test looks.
class HoldJob
  include Sidekiq::Worker

  def perform(release_key)
    redis = Redis.new(url: "redis://127.0.0.1:#{ENV.fetch("SIDEKIQ_PORT")}/0")
    deadline = Time.now + 60
    sleep 0.1 until redis.exists?(release_key) || Time.now > deadline
  ensure
    redis&.close
  end
end

if $PROGRAM_NAME == __FILE__
  port, namespace, action, queue, count, release_key = ARGV
  options = redis_options(port, namespace)
  Sidekiq.configure_client { |config| config.redis = options }
  Sidekiq.logger.level = Logger::WARN
  case action
  when "push"
    Integer(count).times do
      Sidekiq::Client.push("class" => HoldJob, "queue" => queue, "args" => [release_key])
    end
    puts JSON.generate(pushed: Integer(count))
  when "count"
    running = Sidekiq::WorkSet.new.count { |_process, _thread, work| work["queue"] == queue }
    puts JSON.generate(waiting: Sidekiq::Queue.new(queue).size, running: running)
  else
    abort "unknown action #{action}"
  end
else
  options = redis_options(ENV.fetch("SIDEKIQ_PORT"), ENV["SIDEKIQ_NAMESPACE"])
  Sidekiq.configure_server { |config| config.redis = options }
end
