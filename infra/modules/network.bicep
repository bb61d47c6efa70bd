// Network: the virtual network that lets the Function App reach Key Vaults whose public endpoint is closed or
// firewalled. One subnet for the app's outbound VNet integration (delegated to Flex Consumption's
// Microsoft.App/environments: the Microsoft.App resource provider must be registered, which
// infra/hooks/preprovision.sh checks), one for private endpoints, a private endpoint for each of patrol's two
// vaults (the consumer vault and patrol's own) and their private DNS zone linked to the network.

@description('Azure region of the network.')
@minLength(1)
param location string

@description('Name of the virtual network.')
@minLength(2)
@maxLength(64)
param vnetName string

@description('Address space of the virtual network.')
@minLength(9)
param addressPrefix string = '10.40.0.0/16'

@description('Subnet for the Function App\'s VNet integration.')
@minLength(9)
param appSubnetPrefix string = '10.40.1.0/24'

@description('Subnet for private endpoints.')
@minLength(9)
param privateEndpointSubnetPrefix string = '10.40.2.0/24'

@description('Resource id of the consumer Key Vault (PATs consumers read), which gets a private endpoint.')
@minLength(1)
param keyVaultId string

@description('Resource id of patrol\'s own Key Vault (refresh tokens, notification URLs), which gets a private endpoint.')
@minLength(1)
param ownKeyVaultId string

@description('Give the integration subnet a NAT gateway with a static public IP: outbound traffic (Azure DevOps, Entra, storage) then leaves from one known address, which Azure DevOps Conditional Access / IP policies can allow; without it the subnet relies on default outbound access, which new networks no longer get.')
param natGateway bool = true

@description('Tags applied to every resource.')
param tags object = {}

var delegation = 'Microsoft.App/environments'
var vaultDnsZone = 'privatelink.vaultcore.azure.net'

resource egressIp 'Microsoft.Network/publicIPAddresses@2024-01-01' = if (natGateway) {
  name: '${vnetName}-egress-ip'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
  }
}

resource nat 'Microsoft.Network/natGateways@2024-01-01' = if (natGateway) {
  name: '${vnetName}-nat'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 4
    publicIpAddresses: [
      {
        id: egressIp.id
      }
    ]
  }
}

resource appNsg 'Microsoft.Network/networkSecurityGroups@2024-01-01' = {
  name: '${vnetName}-app-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource endpointNsg 'Microsoft.Network/networkSecurityGroups@2024-01-01' = {
  name: '${vnetName}-pe-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-01-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: appNsg.id
          }
          natGateway: natGateway ? {
            id: nat.id
          } : null
          defaultOutboundAccess: !natGateway
          delegations: [
            {
              name: 'app-integration'
              properties: {
                serviceName: delegation
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: endpointNsg.id
          }
          privateEndpointNetworkPolicies: 'Enabled'
          defaultOutboundAccess: false
        }
      }
    ]
  }
}

resource dnsZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: vaultDnsZone
  location: 'global'
  tags: tags
}

resource dnsLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: dnsZone
  name: '${vnetName}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource vaultEndpoint 'Microsoft.Network/privateEndpoints@2024-01-01' = {
  name: '${vnetName}-kv-pe'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: vnet.properties.subnets[1].id
    }
    privateLinkServiceConnections: [
      {
        name: 'vault'
        properties: {
          privateLinkServiceId: keyVaultId
          groupIds: [
            'vault'
          ]
        }
      }
    ]
  }
}

resource vaultDnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-01-01' = {
  parent: vaultEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'vault'
        properties: {
          privateDnsZoneId: dnsZone.id
        }
      }
    ]
  }
}

resource ownVaultEndpoint 'Microsoft.Network/privateEndpoints@2024-01-01' = {
  name: '${vnetName}-kv-own-pe'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: vnet.properties.subnets[1].id
    }
    privateLinkServiceConnections: [
      {
        name: 'vault'
        properties: {
          privateLinkServiceId: ownKeyVaultId
          groupIds: [
            'vault'
          ]
        }
      }
    ]
  }
}

resource ownVaultDnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-01-01' = {
  parent: ownVaultEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'vault'
        properties: {
          privateDnsZoneId: dnsZone.id
        }
      }
    ]
  }
}

@description('Resource id of the subnet the Function App integrates with.')
output appSubnetId string = vnet.properties.subnets[0].id

@description('Static outbound IP address of the Function App (empty without the NAT gateway).')
output egressIpAddress string = natGateway ? egressIp.properties.ipAddress : ''

@description('Resource id of the virtual network.')
output vnetId string = vnet.id
