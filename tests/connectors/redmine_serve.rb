# Starts Debian's Redmine on a throwaway SQLite instance for the tests (redminepeer.py).
# ARGV: port file, keys file. The instance folder (REDMINE_INSTANCE) holds
# config/database.yml; on an empty database this migrates it, loads Redmine's default
# data (statuses, trackers, roles, workflows), switches the REST API on and makes the
# users admin, alice and bob, then writes their API keys as JSON. It serves with WEBrick
# on a port the OS picks and writes that port when it listens.
require 'json'
port_file, keys_file = ARGV.fetch(0), ARGV.fetch(1)
require '/usr/share/redmine/config/environment'

unless ActiveRecord::Base.connection.table_exists?('users')
  ActiveRecord::Migration.verbose = false
  ActiveRecord::MigrationContext.new(Rails.root.join('db', 'migrate').to_s,
                                    ActiveRecord::SchemaMigration).migrate
  ActiveRecord::Base.connection.schema_cache.clear!
  ActiveRecord::Base.descendants.each(&:reset_column_information)
  Redmine::DefaultData::Loader.load('en')
  Setting.rest_api_enabled = '1'
  Setting.login_required = '1'
  keys = {'admin' => User.find_by(login: 'admin').api_key}
  %w[alice bob].each do |login|
    user = User.new(firstname: login.capitalize, lastname: 'Test', mail: "#{login}@acme.test")
    user.login = login
    user.password = user.password_confirmation = SecureRandom.hex(16)
    user.save!
    keys[login] = user.api_key
  end
  File.write(keys_file, JSON.generate(keys))
end

unless defined?(WEBrick)  # Debian's ruby-webrick, outside Redmine's bundle
  dirs = Gem.path + ['/usr/share/rubygems-integration/all']
  lib = dirs.flat_map { |d| Dir["#{d}/gems/webrick-*/lib"] }.first
  $LOAD_PATH.unshift(lib) if lib
end
require 'webrick'
require 'rack/handler/webrick'
logger = WEBrick::Log.new($stderr, WEBrick::Log::WARN)
Rack::Handler::WEBrick.run(Rails.application, Host: '127.0.0.1', Port: 0,
                           AccessLog: [], Logger: logger) do |server|
  File.write("#{port_file}.tmp", server.listeners.first.addr[1].to_s)
  File.rename("#{port_file}.tmp", port_file)
end
